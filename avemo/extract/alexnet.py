"""AlexNet (paper: "AlexNet ... we select the fc7 layer ... 4096 neurons"), its weights and its fc7 forward (`Fc7`).

`--weights imagenet` (the default: the paper fine-tunes an ImageNet AlexNet) goes through torchvision's
weights API (downloads once into torch's hub folder), `--weights PATH` loads a local state dict (a
torchvision AlexNet's, with a 1000- or 3-way last layer; fp16 or bf16 ones are converted to fp32, exactly;
one with a NaN or inf parameter is refused, naming it), `--weights none` is random initialisation from a
seed, `--weights tiny` a random AlexNet-shaped network with few channels and a narrow fc6/fc7 (TINY_CHANNELS,
TINY_WIDTH; same module structure, so fc7 export and fine-tuning work unchanged), for tests that only need the
plumbing. Widths are read from the model (`fc7_width`, `pool5_width`), never assumed. Whatever the source,
the weights are then rounded to fp16 values (`round_to_fp16_`; `build_alexnet` says why).

Inputs are the 256×256 images of the media cache, normalised with the ImageNet mean and std:
- key frames are centre-cropped to 224×224, as in Krizhevsky et al. (the border of a film frame is framing);
- spectrograms are resized to 224×224 (`spectrogram_input` "resize", the default), so the network sees every
  frequency (0 Hz to the Nyquist frequency, 8 kHz at 16 kHz) and the whole second (all 49 STFT frames, window
  centres 20–980 ms); "crop" (what avemo did before) keeps the centre 224 rows and columns, which drops
  everything below about 480 Hz (bass, voice pitch) and above 7.5 kHz, and the first and last ~62 ms. The grey
  image is repeated over the three channels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision

from avemo.errors import AvemoError

FC7_DIM = 4096  # AlexNet's fc7 (the paper's "4096 neurons"); other networks: fc7_width(model)
POOL5_DIM = 256 * 6 * 6  # AlexNet's features + avgpool, flattened: the input of fc6; others: pool5_width(model)
CONV_CHANNELS = (64, 192, 384, 256, 256)  # AlexNet's five convolutions
TINY_CHANNELS = (8, 16, 16, 16, 16)  # --weights tiny: pool5 is 16·6·6 = 576 wide
TINY_WIDTH = 64  # --weights tiny: fc6 and fc7
NAMED_WEIGHTS = ("imagenet", "none", "tiny")  # --weights values that are not a path
CROP = 224  # AlexNet's input size
SPECTROGRAM_INPUTS = ("resize", "crop")  # how a 256×256 spectrogram becomes 224×224 (module docstring)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRECISION = "fp16"  # the values every AlexNet holds (build_alexnet); recorded as the stores' `alexnet_precision`


def build_alexnet(weights: str, seed: int = 0) -> torch.nn.Module:
    """An AlexNet in eval mode with the requested weights (see module docstring), rounded to fp16 values
    (`round_to_fp16_`): one precision everywhere. Every AlexNet whose fc7 avemo computes (extraction, its
    fine-tuned and joint-tuned copies, `predict`, a model folder) then holds fp16-representable fp32 weights,
    so a model folder stores them in fp16 without loss and predicts exactly as its run."""
    if weights == "imagenet":
        return round_to_fp16_(_imagenet_alexnet())
    if weights in ("none", "tiny"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if weights == "tiny":
                return round_to_fp16_(alexnet_shaped(TINY_CHANNELS, TINY_WIDTH).eval())
            return round_to_fp16_(torchvision.models.alexnet(weights=None).eval())
    return round_to_fp16_(_local_alexnet(weights), weights)


@torch.no_grad()
def round_to_fp16_(module: torch.nn.Module, source: str = "AlexNet") -> torch.nn.Module:
    """`module` with every floating parameter and buffer rounded, in place, to the nearest fp16 value (kept in
    its dtype: fp32 tensors of fp16 values, which fp16 storage keeps exactly). Returns `module`. A finite value
    beyond fp16's range (±65504) is refused, naming `source` and the parameter: it would become inf."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point():
            rounded = tensor.half()
            if not bool(torch.isfinite(rounded).all()) and bool(torch.isfinite(tensor).all()):
                raise AvemoError(
                    f"{source}: parameter {name} holds values beyond fp16's range (±65504), and avemo's AlexNets hold "
                    "fp16 values; use other weights (or tune with a lower learning rate)"
                )
            tensor.copy_(rounded.to(tensor.dtype))
    return module


def check_precision(settings: dict, folder: Path) -> None:
    """Refuse a features (or pool5) store whose AlexNets were not fp16-valued (`settings`: its manifest
    settings; made before avemo rounded them): its features cannot be made again for new videos exactly."""
    if settings.get("alexnet_precision") != PRECISION:
        raise AvemoError(f"{folder}: made by an older avemo (AlexNet weights not in fp16): extract again into a new cache")


def is_fp16_valued(module: torch.nn.Module) -> bool:
    """Whether every floating parameter and buffer of `module` holds fp16-representable values."""
    tensors = [*module.parameters(), *module.buffers()]
    return all(torch.equal(t, t.half().to(t.dtype)) for t in tensors if t.is_floating_point())


def alexnet_shaped(
    channels: tuple[int, ...] = CONV_CHANNELS, width: int = FC7_DIM, num_classes: int = 1000
) -> torchvision.models.AlexNet:
    """torchvision's AlexNet module structure (features: 5 convolutions, 3 max-pools; avgpool 6×6; classifier
    dropout, fc6, ReLU, dropout, fc7, ReLU, fc8) with other convolution channels and fc6/fc7 width; its new
    layers are made on the current default device (meta: to be filled by a state dict)."""
    with torch.device("meta"):
        model = torchvision.models.alexnet(num_classes=num_classes)  # the structure; its layers are replaced below
    sizes = (3, *channels)
    for i, position in enumerate((0, 3, 6, 8, 10)):
        old = model.features[position]
        model.features[position] = torch.nn.Conv2d(sizes[i], sizes[i + 1], old.kernel_size, old.stride, old.padding)
    model.classifier[1] = torch.nn.Linear(channels[-1] * 6 * 6, width)
    model.classifier[4] = torch.nn.Linear(width, width)
    model.classifier[6] = torch.nn.Linear(width, num_classes)
    return model


def fc7_width(model: torch.nn.Module) -> int:
    """The width of fc7 of an AlexNet-shaped network (or of its Fc7)."""
    return (model.fc6_fc7 if isinstance(model, Fc7) else model.classifier)[4].out_features


def pool5_width(model: torch.nn.Module) -> int:
    """The width of pool5 (the input of fc6) of an AlexNet-shaped network (or of its Fc7)."""
    return (model.fc6_fc7 if isinstance(model, Fc7) else model.classifier)[1].in_features


def _local_alexnet(weights: str) -> torch.nn.Module:
    """An AlexNet-shaped state dict from a file (layer widths read from its shapes; see module docstring)."""
    path = Path(weights)
    if not path.is_file():
        named = ", ".join(f"'{name}'" for name in NAMED_WEIGHTS)
        raise AvemoError(f"--weights {weights}: not {named} or an existing state-dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise AvemoError(f"{path}: cannot load a state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict):
        state = _finite_fp32(state, path)
    try:
        # Built on the meta device and filled by the state dict itself: no random init to overwrite.
        with torch.device("meta"):
            model = alexnet_shaped(*_shapes_of(state))
        model.load_state_dict(state, assign=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise AvemoError(f"{path}: not an AlexNet state dict ({str(e).splitlines()[0][:120]})") from None
    return model.eval()


def _shapes_of(state: object) -> tuple[tuple[int, ...], int, int]:
    """(convolution channels, fc6/fc7 width, classes) of an AlexNet-shaped state dict; AlexNet's where a
    layer is absent (the state dict is then refused by load_state_dict, naming what is missing)."""

    def rows(key: str, default: int) -> int:
        value = state.get(key) if isinstance(state, dict) else None
        return int(value.shape[0]) if isinstance(value, torch.Tensor) and value.dim() else default

    channels = tuple(rows(f"features.{i}.weight", c) for i, c in zip((0, 3, 6, 8, 10), CONV_CHANNELS))
    return channels, rows("classifier.4.weight", FC7_DIM), rows("classifier.6.weight", 1000)


def _finite_fp32(state: dict, path: Path) -> dict:
    """The state dict with every floating tensor as fp32 (a half-precision or bf16 state dict converts exactly,
    and AlexNet runs in fp32 here); a parameter with NaN or inf is refused, naming it: such weights make every
    feature NaN, and every clip would quietly be predicted alike."""
    out = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise AvemoError(
                    f"{path}: parameter {name} holds {bad} non-finite value(s) (NaN or inf) of {value.numel()}; "
                    "these weights cannot make features: use another weights file (or --weights imagenet / none)"
                )
            value = value.float()
        out[name] = value
    return out


def _imagenet_alexnet() -> torch.nn.Module:
    """torchvision's ImageNet AlexNet; without the internet (and no copy in torch's hub folder) one Error line
    that says where the file goes and how to do without it."""
    spec = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    file = Path(torch.hub.get_dir()) / "checkpoints" / spec.url.rsplit("/", 1)[-1]
    present = file.is_file()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torch's "Downloading: ..." line: ours says it better
            model = torchvision.models.alexnet(weights=spec, progress=False).eval()
        if not present:
            print(f"weights: torchvision's ImageNet AlexNet downloaded to {file}")
        return model
    except Exception as e:  # noqa: BLE001 - offline (URLError), a truncated download, a full disk, ...
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise AvemoError(
            f"--weights imagenet: cannot load torchvision's ImageNet AlexNet ({type(e).__name__}: {reason}); "
            f"torchvision reads it from {file} (downloaded once from {spec.url}): copy that file there "
            "(or set TORCH_HOME), or pass --weights PATH to a local AlexNet state dict (--weights none: random init)"
        ) from None


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of the parameters themselves, recorded with the features they produced."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Fc7(torch.nn.Module):
    """uint8 images [B, 256, 256, 3] (or [B, 256, 256] grey) → post-ReLU fc7 activations [B, fc7 width]
    (4096 for AlexNet). It shares the AlexNet's layers (no copy)."""

    def __init__(self, alexnet: torch.nn.Module, spectrogram_input: str = "resize"):
        super().__init__()
        if spectrogram_input not in SPECTROGRAM_INPUTS:
            raise AvemoError(f"spectrogram input {spectrogram_input!r}: must be one of {', '.join(SPECTROGRAM_INPUTS)}")
        self.spectrogram_input = spectrogram_input
        self.features, self.avgpool = alexnet.features, alexnet.avgpool
        self.fc6_fc7 = alexnet.classifier[:6]  # dropout, fc6, ReLU, dropout, fc7, ReLU
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] key frames (centre crop) or [B, H, W] spectrograms (resize or crop) → normalised
        float [B, 3, 224, 224], channels-last."""
        if images.dim() == 3 and self.spectrogram_input == "resize":
            grey = images.unsqueeze(1).float()
            if grey.shape[-2:] != (CROP, CROP):
                # antialiased bilinear: every row and column of the spectrogram contributes
                grey = torch.nn.functional.interpolate(grey, (CROP, CROP), mode="bilinear", antialias=True)
            x = grey.expand(-1, 3, -1, -1)
        else:
            if images.dim() == 3:
                images = images.unsqueeze(-1).expand(-1, -1, -1, 3)
            top = (images.shape[1] - CROP) // 2
            left = (images.shape[2] - CROP) // 2
            x = images[:, top : top + CROP, left : left + CROP].permute(0, 3, 1, 2).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def pool5(self, images: torch.Tensor) -> torch.Tensor:
        """The convolutional part (>90% of the cost): uint8 images → [B, pool5 width] (9216 for AlexNet), the
        input of fc6."""
        return torch.flatten(self.avgpool(self.features(self.preprocess(images))), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc6_fc7(self.pool5(images))


def fc7_features(model: Fc7, images: np.ndarray, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """fc7 of every image, fp16 [n, fc7 width]; batched, channels-last, AMP on CUDA."""
    return batched(model, images, fc7_width(model), batch_size, device)


def pool5_features(model: Fc7, images: np.ndarray, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """pool5 of every image, fp16 [n, pool5 width] (what fc6 sees), computed the same way as fc7_features."""
    return batched(model.pool5, images, pool5_width(model), batch_size, device)


@torch.inference_mode()
def batched(
    fn: Callable[[torch.Tensor], torch.Tensor], inputs: np.ndarray, dim: int, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """`fn` over `inputs` in batches → fp16 [n, dim]; AMP on CUDA, fp32 on CPU (bf16 is slower there)."""
    out = np.empty((len(inputs), dim), np.float16)
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(inputs[start : start + batch_size]).to(device)
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            out[start : start + len(batch)] = fn(batch).float().cpu().numpy()
    return out


def spectrogram_input_of(features: dict) -> str:
    """How the spectrograms of a cache's features were fitted to 224×224 (caches made before the choice
    existed cropped them)."""
    return features.get("spectrogram_input", "crop")
