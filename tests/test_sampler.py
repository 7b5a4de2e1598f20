"""Sampling filters and per-request determinism."""

from __future__ import annotations

import torch

from engine.config import SamplingParams
from engine.runtime.sampler import apply_repetition_penalty, codebook_probs, filter_logits, sample_frames

AUDIO = slice(1, None)


def logits(seed: int = 0, channels: int = 3, vocab: int = 50) -> torch.Tensor:
    return torch.randn(channels, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def draw(lg, params, seed, history=None, n=1):
    g = torch.Generator().manual_seed(seed)
    hist = history if history is not None else torch.empty((0, lg.shape[0]), dtype=torch.long)
    return torch.stack([sample_frames(lg[None], [params], [g], [hist], AUDIO)[0] for _ in range(n)])


def filter_one(lg, top_k, top_p):
    return filter_logits(lg[None], torch.tensor([top_k]), torch.tensor([top_p]))[0]


def test_greedy_paths_agree_with_argmax():
    lg = logits()
    for params in (SamplingParams(temperature=0), SamplingParams(top_k=1), SamplingParams(top_p=1e-6)):
        assert torch.equal(draw(lg, params, seed=3, n=5), lg.argmax(-1).repeat(5, 1))


def test_top_k_never_leaves_the_top_k():
    lg = logits(1)
    out = draw(lg, SamplingParams(temperature=5.0, top_k=3), seed=0, n=300)
    top3 = torch.topk(lg, 3, -1).indices
    for c in range(lg.shape[0]):
        assert set(out[:, c].tolist()) <= set(top3[c].tolist())
        assert len(set(out[:, c].tolist())) == 3  # at temperature 5 all three appear


def test_top_p_keeps_the_smallest_set_reaching_p():
    lg = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_one(lg, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_one(lg, 0, 0.81))
    assert kept.tolist() == [[True, True, True, False]]


def test_repetition_penalty_lowers_seen_tokens_only():
    lg = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    out = apply_repetition_penalty(lg, torch.tensor([[0], [1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 1.0]]
    assert torch.equal(apply_repetition_penalty(lg, torch.tensor([[0]]), 1.0), lg)


def test_penalty_applies_to_audio_channels_not_text():
    lg = torch.ones(2, 4)
    lg[:, 0] = 5.0
    history = torch.zeros((3, 2), dtype=torch.long)  # id 0 seen on both channels
    params = SamplingParams(temperature=0, repetition_penalty=100.0)
    frame = sample_frames(lg[None], [params], [torch.Generator()], [history], AUDIO)[0]
    assert frame[0] == 0 and frame[1] != 0


def test_same_seed_same_draws_different_seed_different_draws():
    lg = logits(2)
    p = SamplingParams(temperature=1.0)
    assert torch.equal(draw(lg, p, seed=11, n=20), draw(lg, p, seed=11, n=20))
    assert not torch.equal(draw(lg, p, seed=11, n=20), draw(lg, p, seed=12, n=20))


def test_a_row_draws_the_same_alone_or_in_a_mixed_batch():
    settings = [
        SamplingParams(temperature=0.9),
        SamplingParams(temperature=0.5, top_k=5),
        SamplingParams(temperature=1.2, top_p=0.8),
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0, top_k=2, top_p=0.9, repetition_penalty=1.5),
    ]
    lgs = torch.stack([logits(10 + i) for i in range(len(settings))])
    hist = torch.randint(0, 50, (6, 3))
    alone = [draw(lgs[i], p, seed=i, history=hist, n=30) for i, p in enumerate(settings)]
    gens = [torch.Generator().manual_seed(i) for i in range(len(settings))]
    together = torch.stack([sample_frames(lgs, settings, gens, [hist] * len(settings), AUDIO) for _ in range(30)], 1)
    for i in range(len(settings)):
        assert torch.equal(together[i], alone[i])
    assert len({tuple(x) for x in together[0].tolist()}) > 5  # the rows really sample


def test_draws_follow_the_distribution():
    lg = torch.log(torch.tensor([[0.6, 0.3, 0.1, 0.0]]))
    out = draw(lg, SamplingParams(temperature=1.0), seed=0, n=4000)[:, 0]
    freq = torch.bincount(out, minlength=4).float() / len(out)
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1, 0.0]), atol=0.03)  # ~4 sigma at n=4000


def test_invalid_params_are_rejected():
    import pytest

    for bad in (dict(temperature=-1), dict(top_p=0.0), dict(top_k=-2), dict(repetition_penalty=0), dict(max_frames=0)):
        with pytest.raises(ValueError):
            SamplingParams(**bad).validate()


def test_codebook_probs_are_each_rows_tempered_softmax_and_one_hot_for_greedy_rows():
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 6)  # channel 0 plus two codebooks of 5 codes and a pad id
    logits[1, 1, :2] = 4.0  # a tie at the top: greedy draws the first, probs must not blend
    frames = torch.tensor([[0, 1, 2], [0, 0, 3], [0, 4, 4]])
    params = [SamplingParams(temperature=0.5), SamplingParams(temperature=0.0), SamplingParams(temperature=1.0)]
    probs = codebook_probs(logits, frames, params, codebook_size=5)
    assert probs.shape == (3, 2, 5)
    torch.testing.assert_close(probs[0], (logits[0, 1:, :5] / 0.5).softmax(-1))
    torch.testing.assert_close(probs[2], logits[2, 1:, :5].softmax(-1))
    assert torch.equal(probs[1], torch.nn.functional.one_hot(frames[1, 1:], 5).float())
    # A row's distribution is its own whatever the batch.
    assert torch.equal(codebook_probs(logits[2:], frames[2:], params[2:], 5)[0], probs[2])
