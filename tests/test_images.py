import h5py
import numpy as np
import pytest

from avemo.cache.images import concat_blocks, encode_block, read_images, write_block


@pytest.mark.parametrize("codec", ["jpeg", "png", "raw"])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_images_round_trip_through_hdf5(tmp_path, codec, n):
    rng = np.random.default_rng(n)
    ramp = np.add.outer(np.arange(32), np.arange(32))[None, :, :, None] * 3  # smooth, like real frames
    colour = ((ramp + rng.integers(0, 60, (n, 1, 1, 3))) % 256).astype(np.uint8)
    grey = colour[..., 0].copy()
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_block(f, "colour", concat_blocks([encode_block(colour[:1], codec), encode_block(colour[1:], codec)]))
        write_block(f, "grey", encode_block(grey, codec))
    with h5py.File(tmp_path / "s.h5") as f:
        for name, images in (("colour", colour), ("grey", grey)):
            back = read_images(f, name)
            assert back.shape == images.shape and back.dtype == np.uint8
            if codec == "jpeg":
                assert n == 0 or np.abs(back.astype(int) - images).mean() < 8
            else:
                np.testing.assert_array_equal(back, images)
            if n == 3:
                np.testing.assert_array_equal(read_images(f, name, np.array([0, 2])), back[[0, 2]])


def test_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="image codec must be one of"):
        encode_block(np.zeros((1, 4, 4), np.uint8), "gif")
