import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from avemo.train.heads import EmotionHead, HeadSettings

SMALL = dict(feature_dim=16, hidden=8, lstm_hidden=6, mlp_hidden=5)


@pytest.mark.parametrize("approach", ["visual", "audio", "early", "modal"])
def test_heads_give_three_logits_per_clip(approach):
    head = EmotionHead(HeadSettings(approach=approach, **SMALL))
    logits = head(torch.randn(4, 7, 16), torch.randn(4, 7, 16), torch.tensor([7, 3, 1, 5]))
    assert logits.shape == (4, 3)


def test_modal_fusion_is_the_weighted_sum_of_eq_3():
    head = EmotionHead(HeadSettings(approach="modal", **SMALL))
    with torch.no_grad():
        head.alpha_audio.fill_(0.3)
        head.alpha_visual.fill_(1.7)
    visual, audio = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    g_a = torch.relu(audio @ head.g_audio[0].weight.T + head.g_audio[0].bias)  # eq. 4
    g_v = torch.relu(visual @ head.g_visual[0].weight.T + head.g_visual[0].bias)  # eq. 5
    torch.testing.assert_close(head.fuse(visual, audio), 0.3 * g_a + 1.7 * g_v)
    assert {n for n, p in head.named_parameters() if p.requires_grad} >= {"alpha_audio", "alpha_visual"}


def test_single_modality_heads_ignore_the_other_modality():
    head = EmotionHead(HeadSettings(approach="visual", **SMALL)).eval()
    visual, lengths = torch.randn(2, 4, 16), torch.tensor([4, 2])
    torch.testing.assert_close(head(visual, torch.randn(2, 4, 16), lengths), head(visual, torch.randn(2, 4, 16), lengths))


def test_padding_after_a_clip_does_not_change_its_prediction():
    head = EmotionHead(HeadSettings(approach="modal", **SMALL)).eval()
    visual, audio = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    alone = head(visual, audio, torch.tensor([3]))
    padded = head(
        torch.cat([visual, 9 * torch.randn(1, 5, 16)], 1), torch.cat([audio, 9 * torch.randn(1, 5, 16)], 1), torch.tensor([3])
    )
    torch.testing.assert_close(alone, padded)
    # and the prediction does depend on the last valid second (the LSTM reads the sequence in order)
    changed = visual.clone()
    changed[0, 2] += 5
    assert not torch.allclose(head(changed, audio, torch.tensor([3])), alone)


def test_last_valid_step_equals_a_packed_sequence():
    head = EmotionHead(HeadSettings(approach="modal", **SMALL)).eval()
    visual, audio, lengths = torch.randn(3, 6, 16), torch.randn(3, 6, 16), torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(head.fuse(visual, audio), lengths, batch_first=True, enforce_sorted=False)
    _, (h_last, _) = head.lstm(packed)
    torch.testing.assert_close(head(visual, audio, lengths), head.mlp(h_last[-1]))
