"""How the media cache stores images: encoded one per second (JPEG by default) or as raw uint8 arrays.

Raw 256×256 key frames and spectrograms take 256 KB per video-second (~70 KB with lzf); JPEG at quality
90 takes a fraction of that, which is what lets a 30-hour dataset's media cache sit on a laptop. Key
frames come from lossy video anyway; spectrograms lose a little (`png` keeps them exact).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import h5py
import numpy as np
from PIL import Image

CODECS = ("jpeg", "png", "raw")


@dataclass
class ImageBlock:
    """Per-second images of one or more clips, ready to store: encoded blobs, or a raw uint8 array."""

    codec: str
    shape: tuple[int, ...]  # of one image: (H, W) or (H, W, 3)
    data: list[bytes] | np.ndarray

    def __len__(self) -> int:
        return len(self.data)


def encode_block(images: np.ndarray, codec: str, quality: int = 90) -> ImageBlock:
    """uint8 images [n, H, W] or [n, H, W, 3] → an ImageBlock (jpeg, png, or raw)."""
    if codec not in CODECS:
        raise ValueError(f"image codec must be one of {CODECS}, got {codec!r}")
    if codec == "raw":
        return ImageBlock(codec, tuple(images.shape[1:]), images)
    options = {"jpeg": {"format": "JPEG", "quality": quality}, "png": {"format": "PNG", "compress_level": 1}}[codec]
    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, **options)
        blobs.append(buffer.getvalue())
    return ImageBlock(codec, tuple(images.shape[1:]), blobs)


def concat_blocks(blocks: list[ImageBlock]) -> ImageBlock:
    first = blocks[0]
    if first.codec == "raw":
        return ImageBlock("raw", first.shape, np.concatenate([b.data for b in blocks]))
    return ImageBlock(first.codec, first.shape, [blob for b in blocks for blob in b.data])


def write_block(f: h5py.File, name: str, block: ImageBlock) -> None:
    """Store a block as dataset `name`; its attributes `codec` and `image_shape` say how to read it."""
    if block.codec == "raw":
        chunks = (1, *block.shape) if len(block) else None
        dataset = f.create_dataset(name, data=block.data, compression="lzf" if len(block) else None, chunks=chunks)
    else:
        blobs = np.empty(len(block), dtype=object)
        for i, blob in enumerate(block.data):
            blobs[i] = np.frombuffer(blob, np.uint8)
        # data= (not slice assignment), which h5py reads as one blob per row even for a single image
        dataset = f.create_dataset(name, data=blobs if len(block) else None, shape=(len(block),), dtype=h5py.vlen_dtype(np.uint8))
    dataset.attrs["codec"] = block.codec
    dataset.attrs["image_shape"] = np.array(block.shape, np.int64)


def read_images(f: h5py.File, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
    """Images of one open shard as uint8 [n, H, W(, 3)], whatever the codec; `rows` selects seconds."""
    dataset = f[name]
    selection = slice(None) if rows is None else rows
    if dataset.attrs.get("codec", "raw") == "raw":
        return dataset[selection]
    return _decode(dataset[selection], tuple(dataset.attrs["image_shape"]))


def decode_block(block: ImageBlock) -> np.ndarray:
    """The uint8 images of a block, as the media cache would return them (the codec's round trip)."""
    return np.asarray(block.data) if block.codec == "raw" else _decode(block.data, block.shape)


def _decode(blobs, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty((len(blobs), *shape), np.uint8)
    for i, blob in enumerate(blobs):
        out[i] = np.asarray(Image.open(io.BytesIO(blob if isinstance(blob, bytes) else blob.tobytes())))
    return out
