"""engine.train.train_lm: what the LM's training step does to its inputs (audio dropout, self-feeding)."""

from __future__ import annotations

import torch


def test_drop_audio_blanks_only_generated_inputs():
    from engine.train.lm_data import IGNORE
    from engine.train.train_lm import drop_audio

    frames = torch.randint(0, 256, (4, 50, 9))
    targets = torch.full_like(frames, IGNORE)
    targets[:, 19:39] = 7  # speech_start at 19 and frames 20..38 predict; frames 20..39 are speech inputs
    out = drop_audio(frames, targets, 0.5, 256, torch.Generator().manual_seed(0))
    blank = (out[..., 1:] == 256).all(-1)
    assert torch.equal(out[..., 0], frames[..., 0])  # the text channel is never touched
    assert not blank[:, :20].any() and not blank[:, 40:].any()
    assert 0.3 < blank[:, 20:40].float().mean() < 0.7
    kept = ~blank
    assert torch.equal(out[kept], frames[kept])


def test_self_feed_puts_the_models_own_draw_for_each_frame_in_its_place():
    from engine.models.speech_lm.config import ModelConfig
    from engine.models.speech_lm.model import SpeechLM
    from engine.train.lm_data import IGNORE
    from engine.train.train_lm import self_feed

    torch.manual_seed(0)
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=128, num_codebooks=8, advance=4)
    model = SpeechLM(cfg).train()
    frames = torch.randint(0, 256, (3, 50, 9))
    frames[..., 0] = torch.randint(0, 100, (3, 50))
    targets = torch.full_like(frames, IGNORE)
    targets[:, 19:39] = 7  # frames 20..39 are speech inputs
    # A temperature near zero makes every draw the argmax, which the test can work out itself.
    out = self_feed(model, frames, targets, 1.0, 1e-4, torch.Generator().manual_seed(0))
    assert model.training  # dropout back on for the step that follows
    with torch.no_grad():
        hidden = model.eval()(frames, torch.arange(50).expand(3, 50))
        best = torch.stack([head(hidden).argmax(-1) for head in model.heads[1:]], dim=-1)
    assert torch.equal(out[:, 20:40, 1:], best[:, 19:39])  # the draw at t is fed at t + 1
    assert torch.equal(out[:, :20], frames[:, :20]) and torch.equal(out[:, 40:], frames[:, 40:])
    assert torch.equal(out[..., 0], frames[..., 0])  # the text channel is the teacher's
    half = self_feed(model.train(), frames, targets, 0.5, 1.0, torch.Generator().manual_seed(1))
    swapped = (half[:, 20:40, 1:] != frames[:, 20:40, 1:]).any(-1).float().mean()
    assert 0.3 < swapped < 0.7
    assert self_feed(model, frames, targets, 0.0, 0.5, torch.Generator()) is frames


def test_examples_draw_lines_evenly_or_voices_evenly(tmp_path):
    from collections import Counter

    from engine.train.token_store import TOKENS, load_token_shard, save_token_shard
    from engine.train.train_lm import Examples, model_config

    real = load_token_shard(sorted((TOKENS / "train").glob("shard_*.npz"))[0])
    # "small~1" is a warped variant of "small" (augment_tokens): drawn as one voice with it
    voices = ["big"] * 30 + ["small"] * 2 + ["small~1"] * 2 + ["solo"]
    save_token_shard(tmp_path / "shard_00000.npz", [{**r, "voice": v} for r, v in zip(real * 2, voices)])
    cfg = model_config(64, 1, 8, 256)
    shares = {}
    for per_voice in (False, True):
        data = Examples(tmp_path, cfg, max_ref_frames=250, seed=0, per_voice=per_voice)
        counts = Counter(data.draw()["voice"] for _ in range(3000))
        assert "solo" not in counts  # no other line of its voice to prompt with
        shares[per_voice] = counts["big"] / 3000
        frames, targets, speaker = data.batch(4)
        assert frames.shape[0] == 4 and frames.shape == targets.shape and speaker is None
    assert abs(shares[False] - 30 / 34) < 0.03  # every line alike
    assert abs(shares[True] - 0.5) < 0.04  # every voice alike


def test_no_voice_gives_that_share_of_examples_a_prefix_of_bos_alone():
    from engine.train.token_store import TOKENS
    from engine.train.train_lm import Examples, model_config

    cfg = model_config(64, 1, 8, 256)
    data = Examples(TOKENS / "train", cfg, max_ref_frames=250, seed=0, no_voice=0.3)
    voiceless = 0
    for _ in range(300):
        frames, targets, _ = data.sample()
        speech = int((frames[:, 0] == cfg.speech_start).nonzero()[0])
        before = frames[:speech]
        assert before[0, 0] == cfg.bos and (targets[:speech] == -100).all()
        # A voice prefix holds audio frames before the text; a voiceless one only text.
        voiceless += bool((before[:, 1:] == cfg.audio_pad).all())
    assert 0.2 < voiceless / 300 < 0.4


def test_speaker_vectors_come_with_their_voice_and_are_zero_without_a_voice_prefix(tmp_path):
    import numpy as np
    import pytest

    from engine.train.speaker_vectors import VECTORS, load_vectors
    from engine.train.synth_data import write_npz
    from engine.train.token_store import TOKENS, load_token_shard, save_token_shard
    from engine.train.train_lm import Examples, model_config

    real = load_token_shard(sorted((TOKENS / "train").glob("shard_*.npz"))[0])
    voices = ["a"] * 6 + ["b"] * 6
    save_token_shard(tmp_path / "shard_00000.npz", [{**r, "voice": v} for r, v in zip(real * 2, voices)])
    cfg = model_config(64, 1, 8, 256, speaker_dim=4)
    with pytest.raises(SystemExit, match="no speaker vector"):
        Examples(tmp_path, cfg, max_ref_frames=250, seed=0, speakers=True)
    write_npz(tmp_path / VECTORS, a=np.array([1, 0, 0, 0], np.float32), b=np.array([0, 1, 0, 0], np.float32))
    assert set(load_vectors(tmp_path)) == {"a", "b"}
    data = Examples(tmp_path, cfg, max_ref_frames=250, seed=0, speakers=True, no_voice=0.3)
    zeros = 0
    for _ in range(200):
        frames, _, speaker = data.sample()
        voiceless = bool((frames[: int((frames[:, 0] == cfg.speech_start).nonzero()[0]), 1:] == cfg.audio_pad).all())
        if voiceless:
            zeros += 1
            assert not speaker.any()
        else:  # the vector of the voice whose line the example ends with
            (line,) = [i for i, r in enumerate(real[:12]) if torch.equal(frames[-len(r["codes"]) :, 1:], r["codes"])]
            assert speaker.tolist() == ([1, 0, 0, 0] if voices[line] == "a" else [0, 1, 0, 0])
    assert 0.2 < zeros / 200 < 0.4
    frames, targets, speakers = data.batch(4)
    assert speakers.shape == (4, 4)
