"""Reference recordings: decode WAV bytes and check that they hold speech.

Registration rejects what would make a bad voice prompt, with a reason the
user can act on: not a WAV, too short or long, silent, a steady tone, noise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile

MIN_SECONDS = 3.0
MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Reference:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_wav(data: bytes) -> Reference:
    """Decode a mono or multichannel WAV (PCM 8-32 bit or float) to float32 mono."""
    if not data:
        raise ValueError("reference_wav is empty")
    try:
        info = soundfile.info(io.BytesIO(data))
        if info.format != "WAV" and info.format != "WAVEX":
            raise ValueError(f"reference must be a WAV file, got {info.format}")
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise ValueError(f"reference_wav is not a readable WAV file ({exc})") from None
    if not 8000 <= rate <= 192000:
        raise ValueError(f"reference sample rate {rate} Hz is outside 8000-192000 Hz")
    mono = samples.mean(axis=1)
    if not np.isfinite(mono).all():
        raise ValueError("reference contains NaN or infinite samples")
    return Reference(np.clip(mono, -1.0, 1.0).astype(np.float32), int(rate))


def check_speech(ref: Reference, max_seconds: float = MAX_SECONDS) -> None:
    """Raise ValueError unless `ref` plausibly holds MIN_SECONDS to `max_seconds` of speech.

    Speech is loud enough, switches on and off at syllable rate, and is not
    white-noise flat. Thresholds: speech measured here sits far from each of them
    (flatness ~0.05-0.3, level swing > 15 dB); silence, a held tone and noise
    fail one of them by a wide margin."""
    if not MIN_SECONDS <= ref.seconds <= max_seconds:
        raise ValueError(
            f"reference is {ref.seconds:.1f} s; this model clones from {MIN_SECONDS:g}-{max_seconds:g} s of speech "
            "(GetCapabilities.max_reference_seconds): cut it to a sentence or two and give that part's transcript"
        )
    hop = ref.sample_rate // 50  # 20 ms frames
    frames = ref.samples[: len(ref.samples) // hop * hop].reshape(-1, hop)
    level_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    if level_db.max() < -50:
        raise ValueError("reference is silent (peak level below -50 dBFS)")
    active = level_db > level_db.max() - 30
    if active.sum() * 0.02 < 1.0:
        raise ValueError("reference holds less than 1 s of sound above the noise floor")
    spectrum = np.abs(np.fft.rfft(frames[active] * np.hanning(hop), axis=1)) + 1e-9
    flatness = np.exp(np.mean(np.log(spectrum), axis=1)) / np.mean(spectrum, axis=1)
    if np.median(flatness) > 0.5:
        raise ValueError("reference sounds like noise (flat spectrum), not speech")
    swing = np.percentile(level_db[active], 95) - np.percentile(level_db[active], 10)
    if swing < 6.0:
        raise ValueError("reference has a constant level (a tone or hum?); speech rises and falls with syllables")


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """float32 mono -> 16-bit PCM WAV bytes."""
    buf = io.BytesIO()
    soundfile.write(buf, np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()
