"""Audio samples at the edges of the engine: float <-> 16-bit PCM, and a synthetic voice-like signal.

Float audio is mono float32 in [-1, 1]; PCM16 is little-endian int16 scaled by 32767,
so a full-scale float maps to +-32767 and the round trip is symmetric.
"""

from __future__ import annotations

import math

import numpy as np

PCM16_SCALE = 32767


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples -> int16 (clipped to [-1, 1], rounded)."""
    return (np.clip(samples, -1.0, 1.0) * PCM16_SCALE).round().astype("<i2")


def from_pcm16(pcm: np.ndarray | bytes) -> np.ndarray:
    """int16 samples (an array, or little-endian bytes) -> float32."""
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        pcm = np.frombuffer(pcm, dtype="<i2")
    return pcm.astype(np.float32) / PCM16_SCALE


def speechlike_wave(
    seconds: float,
    sr: int = 24000,
    f0: float = 130.0,
    glide: float = 0.2,
    glide_hz: float = 0.4,
    syllable_hz: float = 3.5,
    floor: float = 0.5,
) -> np.ndarray:
    """A gliding, syllable-paced harmonic signal that passes the speech checks of a reference
    recording: the random-weight model's demo voices and the tests register it."""
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + glide * np.sin(2 * math.pi * glide_hz * t))
    phase = np.cumsum(2 * math.pi * pitch / sr)
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    return (0.25 * wave * (floor + (1 - floor) * np.abs(np.sin(2 * math.pi * syllable_hz * t)))).astype(np.float32)
