import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from avemo.train.heads import EmotionHead, HeadSettings, head_inputs

SMALL = dict(feature_dim=16, hidden=8, lstm_hidden=6, mlp_hidden=5)


def packed(*clips: torch.Tensor) -> torch.Tensor:
    return torch.cat(clips)


@pytest.mark.parametrize("approach", ["visual", "audio", "early", "modal"])
def test_heads_give_three_logits_per_clip_and_per_second(approach):
    head = EmotionHead(HeadSettings(approach=approach, **SMALL))
    lengths = torch.tensor([7, 3, 1, 5])
    visual, audio = torch.randn(16, 16), torch.randn(16, 16)
    assert head(visual, audio, lengths).shape == (4, 3)
    assert head(visual, audio, lengths, per_step=True).shape == (16, 3)


@pytest.mark.parametrize("approach", ["visual", "audio"])
def test_a_single_modality_head_needs_only_its_own_features(approach):
    """The trainer gathers only what a head reads (head_inputs): the other modality may be None."""
    assert head_inputs(approach) == (approach,) and head_inputs("modal") == head_inputs("early") == ("visual", "audio")
    head = EmotionHead(HeadSettings(approach=approach, **SMALL)).eval()
    lengths, mask = torch.tensor([4, 2]), torch.tensor([True, False])
    visual, audio = torch.randn(6, 16), torch.randn(6, 16)
    both = head(visual, audio, lengths, mask)
    alone = head(visual, None, lengths, mask) if approach == "visual" else head(None, audio, lengths, mask)
    torch.testing.assert_close(alone, both)


def test_modal_fusion_is_the_weighted_sum_of_eq_3():
    head = EmotionHead(HeadSettings(approach="modal", **SMALL))
    with torch.no_grad():
        head.alpha_audio.fill_(0.3)
        head.alpha_visual.fill_(1.7)
    visual, audio = torch.randn(6, 16), torch.randn(6, 16)
    g_a = torch.relu(audio @ head.g_audio[0].weight.T + head.g_audio[0].bias)  # eq. 4
    g_v = torch.relu(visual @ head.g_visual[0].weight.T + head.g_visual[0].bias)  # eq. 5
    torch.testing.assert_close(head.fuse(visual, audio), 0.3 * g_a + 1.7 * g_v)
    assert {n for n, p in head.named_parameters() if p.requires_grad} >= {"alpha_audio", "alpha_visual"}


def test_fixed_alpha_keeps_the_given_weights_out_of_training():
    head = EmotionHead(HeadSettings(approach="modal", alpha_audio=0.56, alpha_visual=0.44, learn_alpha=False, **SMALL))
    names = {n for n, _ in head.named_parameters()}
    assert "alpha_audio" not in names and "alpha_visual" not in names
    assert head.state_dict()["alpha_audio"] == pytest.approx(0.56)
    visual, audio = torch.randn(4, 16), torch.randn(4, 16)
    g_a, g_v = head.g_audio(audio), head.g_visual(visual)
    torch.testing.assert_close(head.fuse(visual, audio), 0.56 * g_a + 0.44 * g_v)


def test_a_clip_without_audio_is_fused_from_its_visual_pathway_only():
    head = EmotionHead(HeadSettings(approach="modal", **SMALL)).eval()
    visual, lengths, silent = torch.randn(5, 16), torch.tensor([2, 3]), torch.tensor([True, False])
    a, b = head(visual, torch.randn(5, 16), lengths, silent), head(visual, torch.randn(5, 16), lengths, silent)
    assert not torch.allclose(a[0], b[0])  # the first clip hears its audio
    torch.testing.assert_close(a[1], b[1])  # the second clip's audio is ignored
    torch.testing.assert_close(
        head.fuse(visual[2:], audio=torch.randn(3, 16), has_audio=torch.zeros(3, dtype=torch.bool)),
        head.alpha_visual * head.g_visual(visual[2:]),
    )


def test_single_modality_heads_ignore_the_other_modality():
    head = EmotionHead(HeadSettings(approach="visual", **SMALL)).eval()
    visual, lengths = torch.randn(6, 16), torch.tensor([4, 2])
    torch.testing.assert_close(head(visual, torch.randn(6, 16), lengths), head(visual, torch.randn(6, 16), lengths))


def test_a_clip_is_predicted_the_same_alone_or_beside_longer_clips():
    head = EmotionHead(HeadSettings(approach="modal", **SMALL)).eval()
    visual, audio = torch.randn(3, 16), torch.randn(3, 16)
    alone = head(visual, audio, torch.tensor([3]))
    long_v, long_a = 9 * torch.randn(8, 16), 9 * torch.randn(8, 16)  # padded to 8 steps in the batch
    together = head(packed(visual, long_v), packed(audio, long_a), torch.tensor([3, 8]))
    torch.testing.assert_close(alone[0], together[0])
    # and the prediction does depend on the last valid second (the LSTM reads the sequence in order)
    changed = visual.clone()
    changed[2] += 5
    assert not torch.allclose(head(changed, audio, torch.tensor([3])), alone)


def test_last_valid_step_equals_a_packed_sequence_and_per_step_outputs():
    head = EmotionHead(HeadSettings(approach="modal", **SMALL)).eval()
    lengths = torch.tensor([6, 2, 4])
    clips_v = [torch.randn(n, 16) for n in lengths.tolist()]
    clips_a = [torch.randn(n, 16) for n in lengths.tolist()]
    padded_v = torch.nn.utils.rnn.pad_sequence(clips_v, batch_first=True)
    padded_a = torch.nn.utils.rnn.pad_sequence(clips_a, batch_first=True)
    sequence = pack_padded_sequence(head.fuse(padded_v, padded_a), lengths, batch_first=True, enforce_sorted=False)
    outputs, (h_last, _) = head.lstm(sequence)
    torch.testing.assert_close(head(packed(*clips_v), packed(*clips_a), lengths), head.mlp(h_last[-1]))
    steps, _ = torch.nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True)
    per_step = head(packed(*clips_v), packed(*clips_a), lengths, per_step=True)
    torch.testing.assert_close(per_step[6:8], head.mlp(steps[1, :2]))  # the second clip's two seconds


@pytest.mark.parametrize("approach", ["visual", "audio"])
def test_late_fusions_mlp_classifier_averages_per_second_probabilities(approach):
    """temporal none (the paper's late-fusion "MLP classifiers"): each second through g → MLP → softmax on its
    own, no LSTM; a clip's probabilities are the mean over its seconds, output t the mean over seconds 0..t."""
    head = EmotionHead(HeadSettings(approach=approach, temporal="none", **SMALL)).eval()
    assert head.lstm is None
    lengths = torch.tensor([4, 1, 3])
    visual, audio = torch.randn(8, 16), torch.randn(8, 16)
    x = visual if approach == "visual" else audio
    layer = head.g_visual[0] if approach == "visual" else head.g_audio[0]
    hidden = torch.relu(x @ layer.weight.T + layer.bias)  # eq. 4/5, by hand
    w1, b1, w2, b2 = head.mlp[0].weight, head.mlp[0].bias, head.mlp[3].weight, head.mlp[3].bias
    p = torch.softmax(torch.relu(hidden @ w1.T + b1) @ w2.T + b2, dim=1)  # dropout is off in eval
    clips = p.split(lengths.tolist())
    expected_clip = torch.stack([c.mean(0) for c in clips])
    expected_steps = torch.cat([c.cumsum(0) / torch.arange(1, len(c) + 1).unsqueeze(1) for c in clips])
    torch.testing.assert_close(torch.softmax(head(visual, audio, lengths), dim=1), expected_clip)
    torch.testing.assert_close(torch.softmax(head(visual, audio, lengths, per_step=True), dim=1), expected_steps)
    # a second's own probabilities do not depend on the order of the seconds: no memory
    reordered = torch.cat([x[:4].flip(0), x[4:]])
    args = (reordered, audio, lengths) if approach == "visual" else (visual, reordered, lengths)
    torch.testing.assert_close(head(*args)[0], head(visual, audio, lengths)[0])
