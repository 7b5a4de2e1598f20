"""The demo voices a fresh server starts with, so a new user hears characters at once.

Until the trained model lands (issue 4) these references are synthetic
speech-like signals with distinct pitch and pacing, not recordings: the toy model
does not speak, so nothing better would be heard anyway. Issue 4 replaces them
with teacher-voice clips.
"""
from __future__ import annotations

import logging

from engine.toy_model import reference_wave
from service.audio_input import encode_wav
from service.voices import VoiceLibrary

log = logging.getLogger(__name__)

# id, display name, transcript, pitch (Hz), syllables per second
DEMO_VOICES = [
    ("guard", "Town Guard", "Halt! State your business in the city, traveler.", 105.0, 3.2),
    ("merchant", "Merchant", "Fine wares, fair prices, and not a single question asked.", 160.0, 4.2),
    ("sprite", "Forest Sprite", "Over here, over here! The old path is hidden under the ferns.", 260.0, 5.0),
]


def install_demo_voices(library: VoiceLibrary, sample_rate: int = 24000) -> list[str]:
    """Register any demo voice the library lacks; returns the ids added."""
    have = {v.info.voice_id for v in library.list()} | set(library.broken)
    added = []
    for voice_id, name, transcript, f0, syllables in DEMO_VOICES:
        if voice_id in have:
            continue
        wave = reference_wave(6.0, sample_rate, f0=f0, syllable_hz=syllables, floor=0.05)
        library.register(voice_id, encode_wav(wave, sample_rate), transcript, name, demo=True)
        added.append(voice_id)
    if added:
        log.info("installed demo voices: %s", ", ".join(added))
    return added
