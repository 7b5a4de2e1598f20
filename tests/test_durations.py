"""Timing by a duration model: the schedule the engine follows, and the model's training."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from engine.config import SamplingParams
from engine.models.speech_lm.durations import (
    PACE_RANGE,
    DurationConfig,
    DurationModel,
    insertion_frames,
    load_durations,
    save_durations,
    schedule,
    trim_ending,
)
from engine.models.speech_lm.toy import make_toy_model
from engine.runtime.outputs import TimingMark
from tests.support import TINY, make_engine, speech_like

TEXT = "Over here! The bridge is out, take the ford."
REF_TEXT = "Well met, traveler. The road north is closed."


def timed_model(path, **overrides):
    """A toy pointer model whose config times speech by a (seeded, random) duration model."""
    model_dir = make_toy_model(path, seed=1, **TINY, advance=4, mark_delay_frames=2, timing="durations", **overrides)
    torch.manual_seed(0)
    durations = DurationModel(DurationConfig()).eval()
    with torch.no_grad():  # about two frames a unit, as speech has, rather than a random model's ~0
        durations.out.bias.fill_(math.log1p(2.0))
    save_durations(durations, model_dir)
    return model_dir


def expected_schedule(eng, model_dir, voice, text, pace=0.0, last=0.0, pause=0.0):
    """The schedule as the contract states it: predicted seconds, the ending capped (`last`, `pause`
    at neutral pace; the final "." is the one quiet unit), scaled by the pace (if 0, the voice's own:
    its reference frames against the prediction for its transcript), in frames."""
    durations = load_durations(model_dir)
    ref_ids = eng.tokenizer.encode(REF_TEXT)
    pace = pace or durations.pace(ref_ids, voice.num_frames - 1 - len(ref_ids))
    seconds = trim_ending(durations.seconds(eng.tokenizer.encode(text)), 1, last, pause)
    return schedule([s * pace for s in seconds], 25.0, 2)


@pytest.mark.parametrize("pace, last, pause", [(0.0, 0.0, 0.0), (1.3, 0.0, 0.0), (1.3, 0.05, 0.02)])
def test_speech_follows_the_duration_models_schedule_and_ends_on_it(tmp_path, pace, last, pause):
    model_dir = timed_model(tmp_path / "m", pace=pace, max_last_unit_s=last, max_final_pause_s=pause)
    with make_engine(model_dir) as eng:
        voice = eng.make_voice(speech_like(2.0), 24000, REF_TEXT, "guard")
        ids = eng.tokenizer.encode(TEXT)
        plan = expected_schedule(eng, model_dir, voice, TEXT, pace, last, pause)
        if last:  # the caps bite: the ending is shorter than predicted
            assert plan.end < expected_schedule(eng, model_dir, voice, TEXT, pace).end
        runs = []
        for seed in (0, 1):
            stream = eng.submit(voice, TEXT, SamplingParams(seed=seed, temperature=1.5))
            events = list(stream)
            marks = [e for e in events if isinstance(e, TimingMark)]
            runs.append((eng.submit(voice, TEXT, SamplingParams(seed=seed, temperature=1.5)).wait_frames(), marks))
            assert stream.finished.reason == "eos"
    assert len(plan.feed) == len(ids)
    for frames, marks in runs:
        assert len(frames) == plan.end  # speech ends where the schedule says, whatever was drawn
        fed = (frames[:, 0] != 0).nonzero().flatten().tolist()
        assert fed == plan.feed and frames[fed, 0].tolist() == ids  # every unit once, in order, on time
        assert [m.start_ms for m in marks] == [(f + 2) * 40.0 for f in plan.feed]
    assert not torch.equal(runs[0][0][:, 1:], runs[1][0][:, 1:])  # the codes are still drawn


def test_a_prefilled_lead_is_read_from_the_prompt_not_drawn_or_sent(tmp_path):
    silence = [3, 1, 4, 1]  # the toy's four codebooks
    plain_dir = timed_model(tmp_path / "plain", pace=1.3)
    model_dir = timed_model(tmp_path / "lead", pace=1.3, silence_frame=silence)
    with make_engine(plain_dir) as eng:
        voice = eng.make_voice(speech_like(2.0), 24000, REF_TEXT, "guard")
        plain = expected_schedule(eng, plain_dir, voice, TEXT, 1.3)
        plain_prompt = eng.submit(voice, TEXT, SamplingParams(seed=0))
        plain_prompt.wait_frames()
    with make_engine(model_dir) as eng:
        voice = eng.make_voice(speech_like(2.0), 24000, REF_TEXT, "guard")
        stream = eng.submit(voice, TEXT, SamplingParams(seed=0, temperature=1.5))
        marks = [e for e in stream if isinstance(e, TimingMark)]
        frames = eng.submit(voice, TEXT, SamplingParams(seed=0, temperature=1.5)).wait_frames()
        prompt = stream.seq.tokens[: stream.seq.prompt_len]
    lead = plain.feed[0]
    assert lead > 0 and stream.finished.reason == "eos"
    assert stream.finished.prompt_frames == plain_prompt.finished.prompt_frames + lead
    assert prompt[-lead:, 1:].tolist() == [silence] * lead and prompt[-lead:, 0].eq(0).all()  # text_pad
    assert len(frames) == plain.end - lead  # the lead is neither drawn nor sent
    fed = (frames[:, 0] != 0).nonzero().flatten().tolist()
    assert fed == [f - lead for f in plain.feed] and fed[0] == 0
    assert [m.start_ms for m in marks] == [(f + 2) * 40.0 for f in fed]  # marks follow the audio sent
    assert stream.finished.audio_seconds == pytest.approx(len(frames) / 25.0, abs=0.05)


def test_a_bark_ends_when_its_units_are_said(tmp_path):
    model_dir = timed_model(tmp_path / "m")
    with make_engine(model_dir) as eng:
        voice = eng.make_voice(speech_like(2.0), 24000, REF_TEXT, "guard")
        plan = expected_schedule(eng, model_dir, voice, "Yes!")
        frames = eng.submit(voice, "Yes!", SamplingParams(seed=0)).wait_frames()
        # A caller that asks for a fixed length (ignore_eos) still gets it: the schedule only stops
        # speech where an end is allowed.
        fixed = eng.submit(voice, "Yes!", SamplingParams(seed=0, ignore_eos=True, max_frames=plan.end + 20))
        fixed_frames = fixed.wait_frames()
    assert len(frames) == plan.end < 40
    assert len(fixed_frames) == plan.end + 20 and fixed.finished.reason == "length"


def test_the_pace_of_a_voice_is_read_off_its_reference_and_clamped():
    torch.manual_seed(0)
    model = DurationModel(DurationConfig()).eval()
    ids = list(range(10, 40))
    neutral = sum(model.seconds(ids)) * 25.0
    assert model.pace(ids, round(neutral * 1.1)) == pytest.approx(1.1, abs=0.02)
    assert model.pace(ids, round(neutral * 5)) == PACE_RANGE[1]
    assert model.pace(ids, 1) == PACE_RANGE[0]


def test_a_saved_duration_model_predicts_the_same(tmp_path):
    torch.manual_seed(3)
    model = DurationModel(DurationConfig(dim=32, layers=2)).eval()
    save_durations(model, tmp_path)
    again = load_durations(tmp_path)
    assert again.cfg == model.cfg
    assert again.seconds([5, 6, 7, 8]) == model.seconds([5, 6, 7, 8])
    assert load_durations(tmp_path / "nothing") is None


def test_the_ending_is_capped_and_nothing_else_moves():
    seconds = [0.4, 0.1, 0.5, 0.2, 0.1, 0.05]  # lead, two spoken units, "!", " ", trailing silence
    trimmed = trim_ending(seconds, 2, last=0.25, pause=0.1)
    assert trimmed[:2] == seconds[:2] and trimmed[2] == 0.25
    assert sum(trimmed[3:]) == pytest.approx(0.1) and trimmed[3] / trimmed[4] == pytest.approx(2.0)
    assert trim_ending(seconds, 2, last=0.0, pause=0.0) == seconds
    assert trim_ending(seconds, 2, last=0.9, pause=0.9) == seconds  # caps above the prediction change nothing
    no_punctuation = trim_ending(seconds, 0, last=0.01, pause=0.01)
    assert no_punctuation[:4] == seconds[:4] and no_punctuation[4:] == [0.01, 0.01]
    assert trim_ending([0.4, 0.2, 0.1], 1, last=0.01, pause=0.0) == [0.4, 0.2, 0.1]  # the lead is no unit


def test_a_schedule_gives_each_unit_a_frame_before_the_end():
    plan = schedule([0.2, 0.001, 0.001, 0.001, 0.1], 25.0, 3)  # three units far shorter than a frame
    assert plan.end >= 4 and plan.feed == sorted(set(plan.feed)) and plan.feed[-1] < plan.end
    assert plan.feed == insertion_frames([0.2, 0.001, 0.001, 0.001, 0.1], plan.end, 25.0, 3)


def test_timing_by_durations_needs_the_duration_model(tmp_path):
    model_dir = make_toy_model(tmp_path / "m", seed=1, **TINY, advance=4, timing="durations")
    with pytest.raises(ValueError, match="durations.json"):
        make_engine(model_dir)
    with pytest.raises(ValueError, match="timing"):
        make_toy_model(tmp_path / "x", seed=1, **TINY, timing="durations")  # no pointer to drive
    with pytest.raises(ValueError, match="'sampled' or 'durations'"):
        make_toy_model(tmp_path / "y", seed=1, **TINY, advance=4, timing="guess")
    with pytest.raises(ValueError, match="pace"):
        make_toy_model(tmp_path / "z", seed=1, **TINY, advance=4, timing="durations", pace=-1.0)
    with pytest.raises(ValueError, match="silence_frame"):
        make_toy_model(tmp_path / "v", seed=1, **TINY, advance=4, timing="durations", silence_frame=[1, 2])
    with pytest.raises(ValueError, match="max_last_unit_s"):
        make_toy_model(tmp_path / "w", seed=1, **TINY, advance=4, timing="durations", max_final_pause_s=-0.1)


def test_training_learns_the_teachers_durations(tmp_path, monkeypatch, capsys):
    """A short run on two committed token shards beats the untrained model on the held-out shard,
    and names the code frame of the teachers' leading silence."""
    import json
    import sys

    from engine.train import train_durations
    from engine.train.token_store import TOKENS, load_token_shard

    for split, shard in (("train", "shard_00000.npz"), ("train", "shard_00200.npz"), ("eval", "shard_00000.npz")):
        (tmp_path / "tokens" / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(TOKENS / split / shard, tmp_path / "tokens" / split / shard)
    held = train_durations.load_lines(tmp_path / "tokens" / "eval", 25.0)
    torch.manual_seed(0)
    untrained = train_durations.evaluate(DurationModel(DurationConfig()), held)
    argv = ["x", "--tokens", str(tmp_path / "tokens"), "--export", str(tmp_path / "out"), "--steps", "120"]
    monkeypatch.setattr(sys, "argv", argv + ["--batch", "16"])
    train_durations.main()
    trained = train_durations.evaluate(load_durations(tmp_path / "out"), held)
    assert trained["mae_frames_per_unit"] < 0.5 * untrained["mae_frames_per_unit"]
    assert trained["line_length_error"] < 0.5 * untrained["line_length_error"]
    silence = json.loads(capsys.readouterr().out.split('"silence_frame": ')[1].split(" under")[0])
    lines = load_token_shard(tmp_path / "tokens" / "eval" / "shard_00000.npz")
    starting = sum(silence in torch.as_tensor(r["codes"])[:3].tolist() for r in lines)
    assert len(silence) == 8 and starting > 0.8 * len(lines)  # nearly every line starts with it
