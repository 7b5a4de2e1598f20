"""Classifier-free guidance on the voice (SamplingParams.voice_guidance): the engine runs a
voiceless copy of each guided utterance beside it in the block pool."""

from __future__ import annotations

import pytest
import torch

from engine.config import SamplingParams
from engine.models.speech_lm.toy import make_toy_model
from tests.support import TINY, concurrently, make_engine, wait_idle

TEXT = "Over here! The bridge is out, take the ford."


def guided(seed: int, frames: int = 24, weight: float = 1.5, **kw) -> SamplingParams:
    return SamplingParams(
        seed=seed, max_frames=frames, ignore_eos=True, temperature=1.0, top_k=50, voice_guidance=weight, **kw
    )


def run_all(streams) -> list[torch.Tensor]:
    return concurrently(lambda i: streams[i].wait_frames(), len(streams))


def test_a_guided_stream_draws_the_same_frames_alone_batched_and_preempted(model_dir, voice):
    target = guided(seed=77)
    with make_engine(model_dir) as eng:
        alone = eng.submit(voice, TEXT, target).wait_frames()
        unguided = eng.submit(voice, TEXT, guided(seed=77, weight=0.0)).wait_frames()
        others = [
            eng.submit(voice, f"Line {i}, spoken at once.", guided(seed=i, weight=float(i % 3))) for i in range(10)
        ]
        batched = run_all(others + [eng.submit(voice, TEXT, target)])[-1]
    # A pool so small that streams (and their guides) are preempted and recomputed.
    lines = [(f"Pressure line {i}.", guided(seed=100 + i, frames=40)) for i in range(6)]
    with make_engine(model_dir) as roomy:
        expected = run_all([roomy.submit(voice, t, p) for t, p in lines])
    with make_engine(model_dir, num_blocks=30) as tight:
        got = run_all([tight.submit(voice, t, p) for t, p in lines])
        s = wait_idle(tight)
        assert s.preemptions > 0 and s.free_blocks == 30
    assert len(alone) == 24 and torch.equal(alone, batched)
    assert not torch.equal(alone, unguided)  # guidance changes what is drawn
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def test_the_guide_is_the_utterance_without_its_voice_and_steers_the_codebooks(model_dir, voice):
    """Each guided step's voiceless hidden state is what the LM computes, with no cache, over
    [bos] + the text + what was drawn; and the frame is the greedy pick of the guided logits."""
    weight = 2.0
    with make_engine(model_dir) as eng:
        family, cfg = eng.family, eng.model_cfg
        seen = []
        step = family.step

        def spy(seqs, hidden, unvoiced=None):
            out = step(seqs, hidden, unvoiced)
            seen.append((seqs[0].guide.tokens.clone(), hidden.clone(), unvoiced, out.frames.clone()))
            return out

        family.step = spy
        params = SamplingParams(seed=0, max_frames=12, ignore_eos=True, temperature=0.0, voice_guidance=weight)
        eng.submit(voice, TEXT, params).wait_frames()
        family.step = step
        assert len(seen) == 12
        ids = eng.tokenizer.encode(TEXT)
        for guide, hidden, unvoiced, frame in seen:
            assert guide[0, 0] == cfg.bos and guide[1 : 1 + len(ids), 0].tolist() == ids
            assert guide[len(ids) + 1, 0] == cfg.speech_start
            with torch.inference_mode():
                dense = family.model(guide[None], torch.arange(len(guide))[None])[:, -1]
                voiced, voiceless = family.model.logits(hidden), family.model.logits(dense)
            torch.testing.assert_close(unvoiced, dense, atol=2e-2, rtol=2e-2)
            audio = voiced[:, 1:] + weight * (voiced[:, 1:] - voiceless[:, 1:])
            assert torch.equal(frame[0, 1:], audio[0, :, : cfg.codebook_size].argmax(-1))


def test_guided_utterances_and_cancels_return_every_block(engine, voice):
    start_free = engine.stats().free_blocks
    for i in range(20):
        assert len(engine.submit(voice, f"Utterance {i}.", guided(seed=i, frames=3)).wait_frames()) == 3
    for i in range(10):
        stream = engine.submit(voice, f"Cancelled {i}, a longer line that would run on.", guided(seed=i, frames=300))
        next(iter(stream.events()))
        stream.cancel()
    assert wait_idle(engine).free_blocks == start_free


def test_guidance_out_of_range_is_refused_and_the_model_default_applies(tmp_path, voice):
    with pytest.raises(ValueError, match="voice_guidance"):
        SamplingParams(voice_guidance=-0.5).validate()
    with pytest.raises(ValueError, match="voice_guidance"):
        SamplingParams(voice_guidance=float("nan")).validate()
    model = make_toy_model(tmp_path / "m", seed=1, **TINY, voice_guidance=0.7)
    with make_engine(model) as eng:
        assert eng.default_sampling().voice_guidance == 0.7
        stream = eng.submit(voice, TEXT, eng.default_sampling(max_frames=5, ignore_eos=True, seed=1))
        assert stream.seq.guide is not None and len(stream.wait_frames()) == 5
