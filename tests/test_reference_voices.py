"""The broad suite's reference voices: split apart, outside the training family, and speech
the service would accept (3-10 s, passing its checks)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.eval.reference_voices import SR, VOICES, build_references, trim, voices_in


def test_each_split_has_eleven_voices_five_of_them_recorded_and_shares_none_with_the_other():
    test, dev = voices_in("test"), voices_in("dev")
    # Recorded people are where the splits disagreed most; each split holds five.
    assert len(test) >= 11 and sum(v.human for v in test) >= 5
    assert len(dev) >= 11 and sum(v.human for v in dev) >= 5
    assert {v.name for v in test}.isdisjoint(v.name for v in dev)
    # A recording (or a synthetic voice's engine setting) is in one split only.
    key = lambda v: (v.source, v.clips) if v.human else v.command[:-2]
    assert {key(v) for v in test}.isdisjoint(key(v) for v in dev)
    assert len({key(v) for v in VOICES}) == len(VOICES)
    with pytest.raises(ValueError, match="split"):
        voices_in("train")


def test_no_reference_voice_is_a_training_voice():
    from engine.train.synth_data import eval_voices, train_voices

    family = {v.name for v in train_voices() + eval_voices()}
    assert not family & {v.name for v in VOICES}
    assert not any("kokoro" in " ".join(v.command) or "piper" in " ".join(v.command) for v in VOICES)


def test_trim_cuts_silence_around_the_sound_only():
    t = np.arange(SR) / SR
    burst = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    clip = np.concatenate([np.zeros(SR // 2, np.float32), burst, 1e-4 * np.ones(SR // 2, np.float32)])
    assert abs(len(trim(clip, SR)) - SR) <= SR // 100


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("espeak-ng", "flite", "text2wave", "ffmpeg", "apt-get", "dpkg-deb")),
    reason="the evaluation voices' engines are not installed: ./run evaltools",
)
def test_every_reference_is_speech_the_service_accepts():
    """Built from the real engines and packages (cached after the first run): each reference is
    3-10 s, passes registration's speech checks, and no two are the same audio."""
    from service.audio_input import Reference, check_speech

    refs = build_references(VOICES)
    assert list(refs) == [v.name for v in VOICES]
    for name, ref in refs.items():
        assert 3.0 <= ref.seconds <= 10.0, (name, ref.seconds)
        check_speech(Reference(ref.audio, SR), max_seconds=10.0)
        assert ref.transcript.strip()
    lengths = [len(r.audio) for r in refs.values()]
    assert len(set(lengths)) == len(lengths)
