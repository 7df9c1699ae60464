"""What AlexNet sees of a spectrogram, and where its weights come from (--weights imagenet offline)."""

import functools

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner

from avemo.cli import main
from avemo.errors import AvemoError
from avemo.extract.alexnet import Fc7, build_alexnet, is_fp16_valued, round_to_fp16_, weights_sha256
from avemo.extract.spectrogram import SpectrogramSettings, spectrogram_images

from helpers import make_clip

TONES = (100, 200, 400)  # Hz: bass and voice pitch, below the ~480 Hz that a centre crop drops


@functools.cache
def alexnet() -> torch.nn.Module:
    """A full-size AlexNet, built once (preprocessing does not change it)."""
    return build_alexnet("none")


def network_input(images: np.ndarray, spectrogram_input: str) -> torch.Tensor:
    """The first channel of what AlexNet's first layer receives, back in grey levels 0..255."""
    x = Fc7(alexnet(), spectrogram_input).preprocess(torch.from_numpy(images))[:, 0]
    return x * (0.229 * 255) + 0.485 * 255


def test_low_tones_reach_the_network_when_spectrograms_are_resized_not_cropped():
    t = np.arange(16000) / 16000
    segments = np.stack([0.1 * np.sin(2 * np.pi * f * t) for f in TONES]).astype(np.float32)
    images = spectrogram_images(segments, SpectrogramSettings())
    resized, cropped = network_input(images, "resize"), network_input(images, "crop")
    assert resized.shape == cropped.shape == (3, 224, 224)
    for i, hz in enumerate(TONES):
        rows = resized[i].mean(1)  # a steady tone is one bright row, low frequencies at the bottom
        expected = 223 - hz / 8000 * 224
        assert abs(int(rows.argmax()) - expected) <= 1.5 and rows.max() > 120, hz
        assert float(cropped[i].max()) < 10, hz  # what the centre crop left of it: nothing


def test_a_resized_spectrogram_keeps_the_first_and_last_62_ms():
    images = np.zeros((1, 256, 256), np.uint8)
    images[0, :, :8] = 200  # sound only in the first 8 of 256 columns (~31 ms)
    assert network_input(images, "resize")[0, :, :4].min() > 100
    assert network_input(images, "crop").max() < 1


def test_imagenet_weights_offline_are_one_error_naming_the_file_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected_file = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    with pytest.raises(AvemoError) as error:
        build_alexnet("imagenet")
    message = str(error.value)
    assert message.startswith("--weights imagenet: cannot load torchvision's ImageNet AlexNet")
    assert str(expected_file) in message and "--weights PATH" in message and "\n" not in message

    # the default of `avemo extract` is imagenet (the paper's start): offline it ends in that one line
    for i in range(2):
        make_clip(tmp_path / f"c{i}.mp4", seconds=1.2, seed=i)
    (tmp_path / "clips.csv").write_text("path,arousal,valence,split\nc0.mp4,0,,train\nc1.mp4,1,,test\n")
    result = CliRunner().invoke(main, ["extract", "--manifest", str(tmp_path / "clips.csv"), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --weights imagenet: cannot load") and result.output.count("\n") == 1

    # with the file where torchvision looks for it, imagenet loads without the internet
    expected_file.parent.mkdir(parents=True, exist_ok=True)  # torchvision made it when it tried
    stand_in = torchvision.models.alexnet(weights=None)
    torch.save(stand_in.state_dict(), expected_file)
    unrounded = weights_sha256(stand_in)
    # ... as its values rounded to fp16 (every AlexNet avemo computes with holds fp16 values)
    assert weights_sha256(build_alexnet("imagenet")) == weights_sha256(round_to_fp16_(stand_in)) != unrounded


def test_every_source_of_weights_gives_fp16_values_that_fp16_storage_keeps_exactly(tmp_path):
    """none, tiny and a PATH (imagenet: the test above): fp32 tensors of fp16 values, so a model folder's fp16
    AlexNets are the very weights that made the features."""
    state = torchvision.models.alexnet(weights=None).state_dict()  # fp32 values, most of them not fp16 ones
    torch.save(state, tmp_path / "fp32.pt")
    loaded = build_alexnet(str(tmp_path / "fp32.pt"))
    # --weights PATH loads the given state dict rounded to fp16 values, not its exact fp32 values
    assert torch.equal(loaded.classifier[4].weight, state["classifier.4.weight"].half().float())
    assert not torch.equal(loaded.classifier[4].weight, state["classifier.4.weight"])
    for model in (alexnet(), build_alexnet("tiny"), loaded):  # --weights none, tiny, PATH
        assert is_fp16_valued(model) and all(p.dtype == torch.float32 for p in model.parameters())
        torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "half.pt")
        assert weights_sha256(build_alexnet(str(tmp_path / "half.pt"))) == weights_sha256(model)  # fp16: lossless
    assert not is_fp16_valued(torchvision.models.alexnet(weights=None))  # the check can fail


def test_weights_beyond_fp16_range_are_refused(tmp_path):
    state = build_alexnet("tiny").state_dict()
    state["classifier.1.bias"][0] = 1e6  # fp16 has no such value: it would become inf
    torch.save(state, tmp_path / "big.pt")
    with pytest.raises(AvemoError, match=r"big.pt: parameter classifier.1.bias holds values beyond fp16's range"):
        build_alexnet(str(tmp_path / "big.pt"))
