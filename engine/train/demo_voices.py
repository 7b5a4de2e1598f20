"""Write the demo voices a trained model ships with: three distinct teacher voices.

    python -m engine.train.demo_voices engine/checkpoints/default

Writes <model>/demo_voices/{guard,merchant,sprite}.wav (24 kHz, 16-bit) and
demo_voices.json (id, display name, transcript), which the service registers on
first start. The voices are teacher blends kept out of training, picked to be far
apart (resemblyzer cosine between them 0.60-0.73 on one shared sentence, where
a voice with itself scores ~0.9).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile

from engine.text.normalize import normalize
from engine.text.tokenizer import make_tokenizer, spell
from engine.train.teachers import SAMPLE_RATE, Kokoro, VoiceSpec

DEMOS = [
    (
        "guard",
        "Town Guard",
        "Halt! State your business in the city, traveler. The gates close at sundown.",
        VoiceSpec("demo-guard", {"jm_kumo": 0.7, "jf_tebukuro": 0.3}, speed=0.95, shift=0.88),
    ),
    (
        "merchant",
        "Merchant",
        "Fine wares, fair prices, and not a single question asked. What will it be?",
        VoiceSpec("demo-merchant", {"jf_alpha": 0.6, "jf_gongitsune": 0.25, "jm_kumo": 0.15}, speed=1.05),
    ),
    (
        "sprite",
        "Forest Sprite",
        "Over here, over here! The old path is hidden under the ferns, follow me!",
        VoiceSpec("demo-sprite", {"jf_tebukuro": 0.7, "jf_alpha": 0.3}, speed=1.1, shift=1.12),
    ),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    args = ap.parse_args()
    out = args.model_dir / "demo_voices"
    out.mkdir(parents=True, exist_ok=True)
    teacher, tok = Kokoro(), make_tokenizer("phonemes", 128)
    listing = []
    for voice_id, name, transcript, voice in DEMOS:
        symbols = spell(tok, normalize(transcript))
        audio = teacher.synthesize(symbols, voice).audio
        soundfile.write(out / f"{voice_id}.wav", np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
        listing.append({"id": voice_id, "name": name, "transcript": transcript})
        print(f"{voice_id}: {len(audio) / SAMPLE_RATE:.1f} s")
    (out / "demo_voices.json").write_text(json.dumps(listing, indent=2) + "\n")


if __name__ == "__main__":
    main()
