"""engine.train.lm_data: training examples laid out as the engine feeds the LM back."""

from __future__ import annotations

import pytest
import torch


def test_lm_examples_match_what_the_engine_feeds_back():
    from engine.models.speech_lm.config import ModelConfig
    from engine.models.speech_lm.durations import insertion_frames
    from engine.train.lm_data import IGNORE, build_example

    # Units start at 0.30, 0.31, 0.32 (a burst), 0.50 and 0.90 s; 25 frames/s, delay 2.
    durations = [0.30, 0.01, 0.01, 0.18, 0.40, 0.10, 0.30]
    fed = insertion_frames(durations, num_frames=30, frame_rate=25.0, delay=2)
    assert fed == [5, 6, 7, 10, 20]  # 2 frames early, one unit per frame, in order
    assert insertion_frames([0.0, 0.04, 0.04, 0.04, 0.0], num_frames=3, frame_rate=25.0, delay=2) == [0, 1, 2]
    with pytest.raises(ValueError):
        insertion_frames([0.0] + [0.01] * 5 + [0.0], num_frames=3, frame_rate=25.0, delay=0)

    cfg = ModelConfig(num_codebooks=8, advance=4, mark_delay_frames=2)
    ids = [10, 11, 12, 13, 14]
    codes = torch.randint(0, 256, (30, 8))
    frames, targets = build_example(cfg, [20, 21], torch.randint(0, 256, (6, 8)), ids, codes, durations, delay=2)
    prefix, prompt = 3 + 6, len(ids) + 1
    assert frames.shape == (prefix + prompt + 30, 9) and targets.shape == frames.shape
    speech = frames[prefix + prompt :]
    assert speech[fed, 0].tolist() == ids and (speech[:, 0] != cfg.text_pad).sum() == len(ids)
    assert torch.equal(speech[:, 1:], codes)
    assert (targets[: prefix + prompt - 1] == IGNORE).all()  # no loss on the prompt
    t0 = targets[prefix + prompt - 1 :]
    assert [i for i, v in enumerate(t0[:, 0].tolist()) if v == cfg.advance] == fed  # advance predicts a fed unit
    assert t0[-1, 0] == cfg.eos and torch.equal(t0[:-1, 1:], codes)

    # A hold_units model: between arrivals each frame holds the unit last fed; the targets do not change.
    held_cfg = ModelConfig(num_codebooks=8, advance=4, mark_delay_frames=2, hold_units=True)
    held, held_targets = build_example(held_cfg, [20, 21], torch.randint(0, 256, (6, 8)), ids, codes, durations, 2)
    ch0 = held[prefix + prompt :, 0].tolist()
    assert ch0[:5] == [cfg.text_pad] * 5 and [ch0[f] for f in fed] == ids
    assert ch0[8:10] == [held_cfg.held(12)] * 2 and ch0[21:] == [held_cfg.held(14)] * 9
    assert torch.equal(held_targets[prefix + prompt - 1 :], t0)
