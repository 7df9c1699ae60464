"""avemo: audio-visual emotion analysis of videos (modal fusion of AlexNet fc7 features, LSTM, MLP).

The Python API is `avemo.api` (extract, train, evaluate, predict; `avemo.extract`, `avemo.train`, … are the
packages that implement them), with its settings dataclasses importable from here:

    from avemo import api, ExtractSettings, TrainSettings, HeadSettings, JointSettings

`avemo.load_model(MODEL)` loads a model folder of `avemo export` (`.predict(path)`). They are imported when
first used: `import avemo` does not import torch.
"""

__version__ = "0.1.0"

_LAZY = {
    "api": "avemo.api",
    "load_model": "avemo.api",
    "ExtractSettings": "avemo.extract.pipeline",
    "DecodeSettings": "avemo.extract.decode",
    "FinetuneSettings": "avemo.extract.finetune",
    "SpectrogramSettings": "avemo.extract.spectrogram",
    "TrainSettings": "avemo.train.settings",
    "JointSettings": "avemo.train.settings",
    "HeadSettings": "avemo.train.heads",
    "AvemoError": "avemo.errors",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'avemo' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_LAZY[name])
    return module if name == "api" else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
