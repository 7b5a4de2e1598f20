"""The demo voices a fresh server starts with, so a new user hears characters at once.

A trained model ships its demo references next to its weights:
`<model>/demo_voices/demo_voices.json` lists id, display name and transcript, and
`<id>.wav` holds each recording (made by `python -m engine.train.demo_voices`).
Without them (the random-weight toy model) the references are synthetic
speech-like signals with distinct pitch and pacing: the toy model does not speak,
so nothing better would be heard anyway.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engine.audio import speechlike_wave
from service.audio_input import encode_wav
from service.voices import VoiceExists, VoiceLibrary

log = logging.getLogger(__name__)

# id, display name, transcript, pitch (Hz), syllables per second
SYNTHETIC = [
    ("guard", "Town Guard", "Halt! State your business in the city, traveler.", 105.0, 3.2),
    ("merchant", "Merchant", "Fine wares, fair prices, and not a single question asked.", 160.0, 4.2),
    ("sprite", "Forest Sprite", "Over here, over here! The old path is hidden under the ferns.", 260.0, 5.0),
]


def demo_references(model_dir: Path | None, sample_rate: int) -> list[tuple[str, str, str, bytes]]:
    """(id, display name, transcript, WAV bytes) for each demo voice."""
    listing = model_dir / "demo_voices" / "demo_voices.json" if model_dir else None
    if listing is not None and listing.exists():
        entries = json.loads(listing.read_text(encoding="utf-8"))
        return [
            (e["id"], e["name"], e["transcript"], (listing.parent / f"{e['id']}.wav").read_bytes()) for e in entries
        ]
    return [
        (
            vid,
            name,
            transcript,
            encode_wav(speechlike_wave(6.0, sample_rate, f0=f0, syllable_hz=syl, floor=0.05), sample_rate),
        )
        for vid, name, transcript, f0, syl in SYNTHETIC
    ]


def install_demo_voices(library: VoiceLibrary, sample_rate: int = 24000, model_dir: Path | None = None) -> list[str]:
    """Register any demo voice the library lacks; returns the ids added."""
    have = {v.info.voice_id for v in library.list()} | set(library.broken)
    added = []
    for voice_id, name, transcript, wav in demo_references(model_dir, sample_rate):
        if voice_id not in have:
            # Once per voices dir: registering tunes the codec to the voice (seconds each).
            log.info("installing demo voice %s", voice_id)
            try:
                library.register(voice_id, wav, transcript, name, demo=True)
            except VoiceExists:
                continue  # a replica sharing the store installed it meanwhile; the sync brings it
            added.append(voice_id)
    if added:
        log.info("installed demo voices: %s", ", ".join(added))
    return added
