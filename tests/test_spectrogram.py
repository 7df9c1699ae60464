import librosa
import numpy as np

from avemo.extract.spectrogram import SpectrogramSettings, hamming, spectrogram_images, stft_magnitude

SETTINGS = SpectrogramSettings()


def test_window_and_hop_are_the_papers_40_and_20_ms():
    assert (SETTINGS.window_length, SETTINGS.hop_length) == (640, 320)  # at 16 kHz
    window = hamming(SETTINGS)
    n = np.arange(640)
    np.testing.assert_allclose(window, 0.54 - 0.46 * np.cos(2 * np.pi * n / 640))  # periodic Hamming


def test_stft_equals_librosa_and_a_direct_dft():
    audio = np.random.default_rng(1).normal(0, 0.1, size=(2, 16000)).astype(np.float32)
    ours = stft_magnitude(audio, SETTINGS)
    assert ours.shape == (2, 321, 49)  # 1 + (16000 - 640) // 320 frames, no centring pad
    scale = 2 / hamming(SETTINGS).sum()
    reference = np.abs(librosa.stft(audio[1], n_fft=640, hop_length=320, window="hamming", center=False)) * scale
    np.testing.assert_allclose(ours[1], reference, atol=1e-5)
    frame = audio[0, 320 * 7 : 320 * 7 + 640] * hamming(SETTINGS)
    k = np.arange(321)[:, None]
    direct = np.abs((frame[None, :] * np.exp(-2j * np.pi * k * np.arange(640) / 640)).sum(1)) * scale
    np.testing.assert_allclose(ours[0, :, 7], direct, atol=1e-5)


def test_full_scale_sine_is_0_db_and_low_frequencies_sit_at_the_bottom():
    t = np.arange(16000) / 16000
    low = np.sin(2 * np.pi * 500 * t)  # 500 Hz = bin 20 of 321 exactly
    high = np.sin(2 * np.pi * 6000 * t)
    magnitude = stft_magnitude(low[None].astype(np.float32), SETTINGS)
    assert abs(magnitude[0, 20].mean() - 1) < 0.01
    images = spectrogram_images(np.stack([low, high]).astype(np.float32), SETTINGS)
    assert images.shape == (2, 256, 256) and images.dtype == np.uint8
    rows = images.astype(float).mean(2).argmax(1)
    assert abs(rows[0] - 255 * (1 - 500 / 8000)) < 3 and abs(rows[1] - 255 * (1 - 6000 / 8000)) < 3
    assert images[0].max() >= 250  # 0 dB maps to white
    assert spectrogram_images(np.zeros((1, 16000), np.float32), SETTINGS).max() == 0  # silence is black
