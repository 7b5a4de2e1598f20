"""engine.train.teachers: the teacher TTS voices speak our phonemes, with durations that add up."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def phonemes():
    from engine.text.tokenizer import make_tokenizer, spell

    return spell(make_tokenizer("phonemes", 128), "Well met, traveler! The bridge is out.")


def test_teachers_speak_our_phonemes_with_durations_that_add_up(phonemes):
    pytest.importorskip("onnxruntime", reason="the train extra is not installed (pip install -e '.[train]')")
    from engine.train.teachers import Kokoro, Piper, VoiceSpec

    for teacher, voice in [
        (Kokoro(1), VoiceSpec("blend", {"jf_alpha": 0.5, "jm_kumo": 0.5}, shift=1.06)),
        (Piper(1), VoiceSpec("joe", piper=True)),
    ]:
        utt = teacher.synthesize(phonemes, voice)
        assert len(utt.durations) == len(phonemes) + 2  # each symbol, plus leading and trailing silence
        assert abs(utt.durations.sum() - len(utt.audio) / 24000) < 1e-3
        assert 1.0 < len(utt.audio) / 24000 < 6.0 and np.abs(utt.audio).max() > 0.05
