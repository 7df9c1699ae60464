"""The one embedder: per second, a key frame and a spectrogram → fc7, computed alike by extract's export,
`avemo predict` and the joint pass's export, so that a video is embedded exactly as the cache's clips were.

An `Embedder` holds, per modality, an AlexNet(-shaped network) wrapped in `Fc7` (sharing its layers: no copy),
how spectrograms become 224×224 (`spectrogram_input`), the fine-tuning mode, the batch size and the device:

- mode `fc`: fc7 = fc6 → fc7 of **fp16** pool5, as extraction caches pool5 (`CACHE/pool5`) and fine-tunes and
  exports from it (the convolutions are frozen in that mode);
- otherwise (`all`, `none`): a full forward of the images.

Every method returns fp16 rows (AMP on CUDA, fp32 on CPU: `alexnet.batched`).

Also here: what made a cache's features, so that they can be made again for new videos: the media store's
decoding settings (`decode_settings`), the AlexNets (`feature_alexnets`: CACHE/models, or the base AlexNet
of a `--finetune none` cache; `joint_alexnets`: those a joint pass tuned), and the embedder of both
(`cache_embedder`, `joint_embedder`). `video(path)` decodes one video as the media cache did (1-s segments,
key frames, spectrograms, the image codec's round trip) and embeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from avemo.approaches import MODALITIES
from avemo.atomic import load_torch
from avemo.cache import ShardStore
from avemo.cache.images import decode_block
from avemo.errors import AvemoError
from avemo.extract.alexnet import (
    Fc7,
    batched,
    build_alexnet,
    check_precision,
    fc7_width,
    pool5_width,
    spectrogram_input_of,
    weights_sha256,
)
from avemo.extract.decode import DecodeSettings, decodable_here, with_recorded_decoder
from avemo.extract.spectrogram import SpectrogramSettings
from avemo.extract.workers import EncodedClip, decode_for_cache

MODES = ("fc", "all", "none")  # the fine-tuning modes (extract.finetune.MODES): fc embeds through fp16 pool5


@dataclass
class EmbeddedVideo:
    """One video decoded and embedded: fc7 per modality, fp16 [seconds, width]."""

    fc7: dict[str, np.ndarray]
    has_audio: bool

    @property
    def n_seconds(self) -> int:
        return len(next(iter(self.fc7.values())))


class Embedder:
    """fc7 of images, or of cached pool5 rows, per modality (module docstring). `alexnets`: modality → an
    AlexNet-shaped network (moved to `device` in place; the embedder computes with its current weights)."""

    def __init__(
        self,
        alexnets: dict[str, torch.nn.Module],
        spectrogram_input: str = "resize",
        mode: str = "none",
        batch_size: int = 64,
        device: str = "cpu",
        decode: DecodeSettings | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"embedding mode {mode!r}: one of {', '.join(MODES)}")
        self.nets = {
            m: Fc7(a, spectrogram_input).to(device, memory_format=torch.channels_last).eval() for m, a in alexnets.items()
        }
        self.mode, self.batch_size, self.device, self.decode = mode, batch_size, device, decode

    @property
    def via_pool5(self) -> bool:
        """fc7 goes through fp16 pool5 (fine-tuning mode fc), as extraction computed it."""
        return self.mode == "fc"

    def width(self, modality: str) -> int:
        """fc7 width of one modality's network (4096 for AlexNet)."""
        return fc7_width(self.nets[modality])

    def pool5(self, modality: str, images: np.ndarray) -> np.ndarray:
        """pool5 of uint8 images, fp16 [n, pool5 width]: what CACHE/pool5 holds."""
        net = self.nets[modality]
        return batched(net.pool5, images, pool5_width(net), self.batch_size, self.device)

    def fc7_from_pool5(self, modality: str, rows: np.ndarray) -> np.ndarray:
        """fc7 of pool5 rows (fp16, as cached), fp16 [n, width]: fc6 → fc7 only."""
        net = self.nets[modality]
        return batched(lambda x: net.fc6_fc7(x.float()), rows, self.width(modality), self.batch_size, self.device)

    def fc7(self, modality: str, images: np.ndarray) -> np.ndarray:
        """fc7 of uint8 images (key frames [n, H, W, 3], spectrograms [n, H, W]), fp16 [n, width], as
        extraction computes it: through fp16 pool5 in mode fc, else a full forward."""
        if self.via_pool5:
            return self.fc7_from_pool5(modality, self.pool5(modality, images))
        net = self.nets[modality]
        return batched(net, images, self.width(modality), self.batch_size, self.device)

    def decode_video(self, path: str | Path) -> EncodedClip:
        """One video decoded as the media cache's clips were (`decode` settings, 1-s segments, key frames,
        spectrograms, image codec); AvemoError with the reason for an unusable file."""
        if self.decode is None:
            raise ValueError("an Embedder without decode settings embeds images, not videos")
        decoded = decode_for_cache((str(path), self.decode))
        if isinstance(decoded, str):
            raise AvemoError(decoded)
        return decoded

    def embed_video(self, decoded: EncodedClip) -> EmbeddedVideo:
        """fc7 of every second of a decoded video, after the codec round trip the media cache applies."""
        fc7 = {m: self.fc7(m, decode_block(getattr(decoded, MODALITIES[m]))) for m in self.nets}
        return EmbeddedVideo(fc7, decoded.has_audio)

    def video(self, path: str | Path) -> EmbeddedVideo:
        """decode_video, then embed_video."""
        return self.embed_video(self.decode_video(path))


# -- what made a cache's features ---------------------------------------------------------------------
def features_settings(cache: Path) -> dict:
    """CACHE/features' manifest settings (one clear line when there are none)."""
    features = ShardStore(cache / "features", "features").settings
    if not features:
        raise AvemoError(f"{cache / 'features'}: no feature manifest; the run's cache is gone or incomplete")
    check_precision(features, cache / "features")
    return features


def finetune_mode(features: dict) -> str:
    """The fine-tuning mode of a cache's features (their manifest settings)."""
    return (features.get("finetune") or {}).get("mode", "none")


def cache_embedder(cache: Path, batch_size: int = 64, device: str = "cpu") -> Embedder:
    """The embedder that made CACHE/features: its AlexNets, spectrogram input, fine-tuning mode and the media
    cache's decoding settings."""
    decode, features = decode_settings(cache), features_settings(cache)
    models, _ = feature_alexnets(cache, features)
    return Embedder(models, spectrogram_input_of(features), finetune_mode(features), batch_size, device, decode)


def joint_embedder(folder: Path, cache: Path, batch_size: int = 64, device: str = "cpu") -> Embedder:
    """The embedder of a joint pass (RUN/joint) on its cache: the AlexNets it tuned; layers fc tuned fc6-fc7
    on fp16 pool5."""
    decode, features = decode_settings(cache), features_settings(cache)
    models, layers = joint_alexnets(folder)
    mode = "fc" if layers == "fc" else "all"
    return Embedder(models, spectrogram_input_of(features), mode, batch_size, device, decode)


def decode_settings(cache: Path) -> DecodeSettings:
    """The media cache's decoding settings as a DecodeSettings."""
    settings = with_recorded_decoder(ShardStore(cache / "media", "media").settings)
    if not settings:
        raise AvemoError(f"{cache / 'media'}: no media manifest; the run's cache is gone or incomplete")
    known = {f.name for f in fields(DecodeSettings)}
    missing = sorted(known - set(settings))
    if missing:  # decoded by an older avemo: new videos would not be decoded as the cache's clips were
        raise AvemoError(
            f"{cache / 'media'}: made by an older avemo (no {', '.join(missing)}): its clips were decoded differently "
            "from how new videos are now; extract again into a new cache and train on it"
        )
    values = {k: v for k, v in settings.items() if k in known}
    spectrogram = {k: v for k, v in settings["spectrogram"].items() if k in {f.name for f in fields(SpectrogramSettings)}}
    return decodable_here(DecodeSettings(**{**values, "spectrogram": SpectrogramSettings(**spectrogram)}), cache / "media")


def feature_alexnets(cache: Path, features: dict) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """Per modality, the AlexNet that made a cache's features (`features`: their manifest settings) and its
    parameter hash: the tuned CACHE/models/<modality>.pt, or the base AlexNet (`--finetune none`), checked
    against the hashes recorded with the features."""
    check_precision(features, cache / "features")
    tuned = features.get("tuned_sha256")
    if not tuned and not (finetune_mode(features) == "none" and "weights" in features):
        raise AvemoError(f"{cache / 'models'}: no fine-tuned AlexNets; extract with fine-tuning (--finetune fc or all)")
    out, hashes = {}, {}
    for modality in MODALITIES:
        if tuned:
            model, expected = _tuned_alexnet(cache, modality), tuned[modality]
        else:
            model, expected = _base_alexnet(cache, features), features.get("weights_sha256")
        hashes[modality] = weights_sha256(model)
        if expected and hashes[modality] != expected:
            raise AvemoError(f"{cache}: the {modality} AlexNet differs from the one that made the cache's features")
        out[modality] = model
    return out, hashes


def _tuned_alexnet(cache: Path, modality: str) -> torch.nn.Module:
    path = cache / "models" / f"{modality}.pt"
    if not path.is_file():
        raise AvemoError(f"{path}: the fine-tuned AlexNet is missing; run `avemo extract` again on this cache")
    return build_alexnet(str(path))


def _base_alexnet(cache: Path, features: dict) -> torch.nn.Module:
    """The AlexNet of a `--finetune none` cache, rebuilt from its recorded weights and seed."""
    try:
        return build_alexnet(features["weights"], features.get("seed", 0))
    except AvemoError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. imagenet weights without the internet
        raise AvemoError(
            f"{cache}: cannot rebuild the AlexNet of the features (--weights {features['weights']}: "
            f"{type(e).__name__}); extract with fine-tuning (--finetune fc) so the models are in the cache"
        ) from None


def joint_alexnets(folder: Path) -> tuple[dict[str, torch.nn.Module], str]:
    """The AlexNets of a joint pass (`RUN/joint/{visual,audio}.pt`, checked against the hashes in its
    model.pt) and the layers it tuned (fc or all)."""
    remedy = f"delete {folder} and run the joint pass again (`avemo train --joint`)"
    saved = load_torch(folder / "model.pt", remedy)
    out = {}
    try:
        entries = {m: (str(saved["alexnets"][m]["file"]), saved["alexnets"][m]["sha256"]) for m in MODALITIES}
        layers = saved["joint"]["layers"]
    except (KeyError, TypeError):
        raise AvemoError(f"{folder / 'model.pt'}: not a joint pass's model.pt; {remedy}") from None
    for modality, (file, sha) in entries.items():
        if Path(file).name != file:
            raise AvemoError(f"{folder / 'model.pt'}: names an AlexNet outside its folder ({file!r}); {remedy}")
        model = build_alexnet(str(folder / file))
        if weights_sha256(model) != sha:
            raise AvemoError(f"{folder / file}: not the AlexNet this joint pass saved; train it again")
        out[modality] = model
    return out, layers
