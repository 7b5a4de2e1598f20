"""Frames in, click-free audio chunks out, at any rate from 8 to 48 kHz.

`ChunkDecoder` re-decodes a few frames of context before each chunk and
crossfades the overlap with the tail it held back from the previous chunk, so a
codec that is not causal still streams without a step at chunk borders.
`StreamingResampler` keeps filter context across chunks, so resampling chunk by
chunk gives the same samples as resampling the whole utterance at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torchaudio.transforms as AT

from engine.codecs.base import Codec, is_stateful
from engine.config import StreamConfig
from engine.runtime.cpu_threads import one_thread

MIN_RATE, MAX_RATE = 8000, 48000


def check_rate(sample_rate: int) -> int:
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise ValueError(f"sample_rate must be within {MIN_RATE}-{MAX_RATE} Hz, got {sample_rate}")
    return sample_rate


class ChunkDecoder:
    def __init__(self, codec: Codec, cfg: StreamConfig, decode: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """`decode` stands in for `codec.decode` (the engine passes its shared audio thread's)."""
        self.codec = codec
        self.decode = decode or codec.decode
        self.context = cfg.context_frames
        spf = codec.samples_per_frame
        self.fade = min(int(codec.sample_rate * cfg.crossfade_ms / 1000), self.context * spf)
        # Equal-power fades: the two overlapping decodes are not phase-locked.
        ramp = (torch.arange(self.fade) + 0.5) / max(self.fade, 1)
        self.fade_in = torch.sin(0.5 * math.pi * ramp)
        self.fade_out = torch.cos(0.5 * math.pi * ramp)
        self.history: torch.Tensor | None = None  # the frames last decoded
        self.tail: torch.Tensor | None = None

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode new frames (codes [n, codebooks], or the codec's float latents [n, dim]);
        returns every sample that is final now."""
        ctx = codes[:0] if self.history is None or not self.context else self.history[-self.context :]
        wave = self.decode(torch.cat([ctx, codes]))
        split = len(ctx) * self.codec.samples_per_frame
        body = wave[split:]
        self.history = torch.cat([ctx, codes])
        if self.fade == 0:
            return body
        parts = []
        if self.tail is not None:
            overlap = wave[split - self.fade : split] if split >= self.fade else body[: self.fade]
            parts.append(self.tail * self.fade_out + overlap * self.fade_in)
        parts.append(body[: -self.fade])
        self.tail = body[-self.fade :]
        return torch.cat(parts)

    def finish(self) -> torch.Tensor:
        """The held-back tail, which ends the utterance."""
        tail, self.tail = self.tail, None
        return torch.zeros(0) if tail is None else tail


class StatefulDecoder:
    """For a codec that decodes causally with per-stream state (a streaming Mimi decoder):
    each frame is decoded once, in order, so nothing is re-decoded or crossfaded."""

    def __init__(self, codec: Codec, decode: Callable[[torch.Tensor, object], torch.Tensor] | None = None):
        """`decode(latents, state)` stands in for the codec's (the engine passes its audio thread's)."""
        self.state = codec.new_stream()
        self.decode = decode or (lambda latents, state: codec.decode_streams([state], latents[None])[0])

    def push(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents, self.state)

    def finish(self) -> torch.Tensor:
        return torch.zeros(0)


@lru_cache(maxsize=32)
def _resampler(orig: int, new: int, width: int) -> AT.Resample:
    """One sinc kernel per rate pair, shared by every stream (`functional.resample` built it
    again for each chunk: a third of the resampling time under load)."""
    return AT.Resample(orig, new, lowpass_filter_width=width)


class StreamingResampler:
    def __init__(self, orig: int, new: int, lowpass_filter_width: int = 6):
        self.orig, self.new = orig, new
        g = math.gcd(orig, new)
        self.o, self.n = orig // g, new // g
        self.width = lowpass_filter_width
        # Context on each side, in input samples: wider than the sinc kernel
        # and a whole number of input periods so output samples stay aligned.
        kernel = math.ceil(lowpass_filter_width * self.o / (min(self.o, self.n) * 0.99))
        self.ctx = math.ceil((kernel + 8) / self.o) * self.o
        self.buf = torch.zeros(self.ctx)  # left context starts as silence, like offline padding

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        with one_thread():
            return _resampler(self.orig, self.new, self.width)(x)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        if self.orig == self.new:
            return x
        self.buf = torch.cat([self.buf, x])
        ready = (len(self.buf) - 2 * self.ctx) // self.o * self.o
        if ready <= 0:
            return x[:0]
        y = self._resample(self.buf[: 2 * self.ctx + ready])
        lo = self.ctx * self.n // self.o
        out = y[lo : lo + ready * self.n // self.o]
        self.buf = self.buf[ready:]
        return out

    def finish(self) -> torch.Tensor:
        if self.orig == self.new:
            return torch.zeros(0)
        rest = len(self.buf) - self.ctx
        y = self._resample(torch.cat([self.buf, torch.zeros(self.ctx)]))
        lo = self.ctx * self.n // self.o
        self.buf = torch.zeros(self.ctx)
        return y[lo : lo + math.ceil(rest * self.n / self.o)]


class AudioStreamer:
    """Groups frames into chunks, decodes and resamples them.

    Chunks ramp up: the first is small so audio starts quickly, and each later one
    holds at most half the frames delivered so far (never fewer than the first),
    up to the chunk size: 3, 3, 3, 4, 6, 8, 8... A listener playing in real time
    must hold more audio than the next chunk takes to make; with this rule that
    holds while the engine runs at a real-time factor below about 2/3. Jumping
    straight from 2 frames to 8 (or even to 3) ran playback dry in the load test.
    """

    def __init__(
        self,
        codec: Codec,
        cfg: StreamConfig,
        sample_rate: int,
        chunk_frames: int | None = None,
        decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        check_rate(sample_rate)
        self.decoder = StatefulDecoder(codec, decode) if is_stateful(codec) else ChunkDecoder(codec, cfg, decode)
        self.resampler = StreamingResampler(codec.sample_rate, sample_rate)
        frame_ms = 1000.0 / codec.frame_rate
        self.chunk = chunk_frames or max(1, round(cfg.chunk_ms / frame_ms))
        # The first chunk rounds down: at 12.5 frames/s one 80 ms frame starts audio sooner than two.
        self.first = min(max(1, int(cfg.first_chunk_ms // frame_ms)), self.chunk)
        self.size = self.first  # frames in the next chunk
        self.delivered = 0  # frames decoded so far
        self.pending: list[torch.Tensor] = []

    def _missing(self) -> int:
        """Frames still missing before the next chunk is due (<= 0: due now)."""
        return self.size - sum(len(c) for c in self.pending)

    def frames_wanted(self) -> int:
        return max(1, self._missing())

    def push(self, codes: torch.Tensor) -> torch.Tensor | None:
        """Add frames [n, codebooks]; returns a chunk when one is due."""
        self.pending.append(codes)
        return self._decode() if self._missing() <= 0 else None

    def _decode(self) -> torch.Tensor:
        codes = torch.cat(self.pending)
        self.pending = []
        self.delivered += len(codes)
        self.size = min(self.chunk, max(self.first, self.delivered // 2))
        return self.resampler.push(self.decoder.push(codes))

    def finish(self) -> torch.Tensor:
        parts = [self._decode()] if self.pending else []
        parts.append(self.resampler.push(self.decoder.finish()))
        parts.append(self.resampler.finish())
        return torch.cat(parts)
