"""The broad suite: lines no corpus template produced, spoken in voices from outside the
training family.

`broad.json` beside this file holds the text, written for this suite: natural NPC lines
in six categories (dialogue, question, exclamation, list, names, numbers), barks of one
to four words, and the reference sentences the synthetic voices read. Every line and bark
is in one split: `dev` is for choosing models and settings, `test` is only reported.
The voices (engine/eval/reference_voices.py) are split too, so a choice made on `dev`
never sees a `test` voice or line.

Each seed, line i of a split is spoken in voice (i + seed) mod n: every voice speaks
every category, and over n seeds every line is heard in every voice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.config import CACHE_ROOT

SUITE_FILE = Path(__file__).with_name("broad.json")
SPLITS = ("dev", "test")
CATEGORIES = ("dialogue", "question", "exclamation", "list", "names", "numbers", "bark")
SHORT_WORDS = 8  # lines under this many words are reported apart: they fail differently
DATA = CACHE_ROOT / "data" / "eval" / "broad"


@dataclass(frozen=True)
class Line:
    text: str
    category: str  # one of CATEGORIES
    split: str  # "dev" or "test"

    @property
    def spoken(self) -> str:
        """What the engine is asked to say, as the service asks it: numbers spelled out."""
        from engine.text.normalize import normalize

        return normalize(self.text)


@cache
def suite() -> dict:
    return json.loads(SUITE_FILE.read_text(encoding="utf-8"))


def lines(split: str) -> list[Line]:
    """The split's lines, then its barks, in file order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data = suite()
    out = [Line(x["text"], x["category"], x["split"]) for x in data["lines"]]
    out += [Line(x["text"], "bark", x["split"]) for x in data["barks"]]
    return [x for x in out if x.split == split]


def reference_sentences() -> list[str]:
    """What the synthetic voices read as their references (never an evaluated line)."""
    return list(suite()["references"])


def assign(items: list[Line], voice_names: list[str], seed: int) -> dict[str, list[Line]]:
    """Each voice's lines for one seed: line i goes to voice (i + seed) mod n."""
    out: dict[str, list[Line]] = {name: [] for name in voice_names}
    for i, line in enumerate(items):
        out[voice_names[(i + seed) % len(voice_names)]].append(line)
    return out


def teacher_audio(items: list[Line], teacher: str) -> list[np.ndarray]:
    """Each line read by a training teacher ("piper": joe; "kokoro": a blend of two bases),
    24 kHz, cached on disk. The teachers' wer on the lines is the ceiling for a model that
    learnt from them; piper's durations are also the yardstick for the model's pace."""
    from engine.audio import from_pcm16, to_pcm16
    from engine.text.tokenizer import make_tokenizer, spell
    from engine.train.synth_data import write_npz
    from engine.train.teachers import Kokoro, Piper, VoiceSpec

    if teacher not in ("piper", "kokoro"):
        raise ValueError(f"teacher must be piper or kokoro, got {teacher!r}")
    path = DATA / f"teacher_{teacher}.npz"
    cached: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as z:  # each z[key] reads the array afresh: read the audio once
            audio, offsets = z["audio"], z["offsets"]
            cached = {str(t): audio[lo:hi] for t, lo, hi in zip(z["texts"], offsets[:-1], offsets[1:])}
    missing = [x.spoken for x in items if x.spoken not in cached]
    if missing:
        tokenizer = make_tokenizer("phonemes", 256)
        if teacher == "piper":
            model, voice = Piper(), VoiceSpec("joe", piper=True)
        else:
            model, voice = Kokoro(), VoiceSpec("jf_alpha+jm_kumo", {"jf_alpha": 0.5, "jm_kumo": 0.5})
        for text in tqdm(missing, desc=f"{teacher} reads the lines", unit="line"):
            cached[text] = to_pcm16(model.synthesize(spell(tokenizer, text), voice).audio)
        DATA.mkdir(parents=True, exist_ok=True)
        texts = sorted(cached)
        write_npz(
            path,
            texts=np.array(texts),
            audio=np.concatenate([cached[t] for t in texts]),
            offsets=np.cumsum([0] + [len(cached[t]) for t in texts]),
        )
    return [from_pcm16(cached[x.spoken]) for x in items]


def breakdown(result: dict, human: set[str]) -> dict:
    """wer by category, for short and long lines and for barks; similarity and speaker-id
    accuracy over the synthetic and the human voices apart. From a scored result's lines
    and per-voice figures, so it works on one seed or several pooled."""

    def wer(rows: list[dict]) -> float | None:
        words = sum(r["words"] for r in rows)
        return round(sum(r["errors"] for r in rows) / words, 4) if words else None

    rows = result["lines"]
    out = {
        "by_category": {c: wer([r for r in rows if r["category"] == c]) for c in CATEGORIES},
        "natural_lines": wer([r for r in rows if r["category"] != "bark"]),  # ("lines" holds the rows)
        "barks": wer([r for r in rows if r["category"] == "bark"]),
        f"under_{SHORT_WORDS}_words": wer([r for r in rows if r["words"] < SHORT_WORDS]),
        f"{SHORT_WORDS}_words_or_more": wer([r for r in rows if r["words"] >= SHORT_WORDS]),
    }
    for group, names in (("synthetic", set(result["per_voice"]) - human), ("human", human)):
        voices = {n: v for n, v in result["per_voice"].items() if n in names}
        if not voices:
            continue
        heard = sum(sum(v["closest_reference"].values()) for v in voices.values())
        sims = [v["similarity"] for v in voices.values() if v["similarity"] is not None]
        out[group] = {
            "voices": sorted(voices),
            "wer": wer([r for r in rows if r["voice"] in names]),
            "similarity": round(float(np.mean(sims)), 4) if sims else None,
            "id_accuracy": round(sum(v["closest_reference"].get(n, 0) for n, v in voices.items()) / heard, 4)
            if heard
            else None,
        }
    return out
