"""What a caller gets back from the engine (events, errors, stats), and the per-utterance handle.

The engine thread only appends frames to a bounded outbox; turning frames into
audio (crossfade, resampling) runs in the consumer's own thread, so a slow
consumer never delays the batch. The codec call itself goes to the engine's
audio thread, which decodes the windows of all streams in batches.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from engine.audio import to_pcm16
from engine.codecs.base import Codec
from engine.config import StreamConfig
from engine.runtime.streaming import AudioStreamer


class EngineError(Exception):
    """What the engine raises to a caller besides ValueError (a bad request: bad sampling
    values, sample rate, voice or text). The service maps each to a status in one table."""


class NothingToSay(EngineError, ValueError):
    """The text holds nothing the front end can speak (only emoji or symbols, say)."""


class EngineOverloaded(EngineError):
    """More work is queued than the engine admits; retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineClosed(EngineError):
    """The engine is shutting down: it takes no new work."""


class FinishReason(str, Enum):
    """Why an utterance ended (a str, so it compares equal to its value)."""

    EOS = "eos"  # the model ended speech
    LENGTH = "length"  # the length guard or the request's max_frames
    CANCELLED = "cancelled"  # the caller cancelled it or stopped reading
    ERROR = "error"  # a failure inside the engine; Finished.error says what
    SHUTDOWN = "shutdown"  # the engine closed before the utterance ended

    def __str__(self) -> str:  # "eos", as in logs and JSON, not "FinishReason.EOS"
        return self.value


@dataclass(frozen=True)
class EngineStats:
    num_blocks: int
    free_blocks: int
    running: int
    waiting: int
    prefix_hits: int  # cached blocks reused (full blocks and voice-prefix tails)
    prefix_misses: int
    prefix_evictions: int
    prefill_frames: int  # frames computed by prefill, including recompute after preemption
    cached_frames: int  # prompt frames supplied by the prefix cache
    decode_frames: int
    steps: int
    preemptions: int
    pinned_voices: int
    pinned_blocks: int
    # Busy fractions of the two serial stages, smoothed over seconds (engine.runtime.busy).
    engine_busy: float = 0.0
    audio_busy: float = 0.0


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray  # float32 mono in [-1, 1]
    offset: int  # index of the first sample within the utterance
    sample_rate: int
    is_last: bool

    def pcm16(self) -> bytes:
        return to_pcm16(self.samples).tobytes()

    def float32(self) -> bytes:
        return np.clip(self.samples, -1.0, 1.0).astype("<f4").tobytes()  # resampling can overshoot


@dataclass(frozen=True)
class TimingMark:
    """The model moved on to text unit `text_index` at `start_ms` into the utterance.

    `char_start`/`char_end` locate that unit in the text passed to `submit`; `unit`
    is what the unit is (a phoneme, or a character for a character-level model)."""

    text_index: int
    start_ms: float
    char_start: int
    char_end: int
    unit: str


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    frames: int
    audio_seconds: float
    prompt_frames: int
    cached_frames: int  # prompt frames the prefix cache supplied
    ttfa_ms: float | None  # submit to first audio chunk, measured by this consumer
    error: str | None = None


@dataclass(frozen=True)
class FrameEvent:
    """A generated frame: its token ids [channels] and, where the codec decodes expected
    latents, the frame's expected latent [dim] (else None)."""

    ids: torch.Tensor
    latent: torch.Tensor | None


@dataclass(frozen=True)
class MarkEvent:
    """The text pointer reached unit `text_index`; its audio starts at frame `frame`."""

    text_index: int
    frame: int


@dataclass(frozen=True)
class DoneEvent:
    reason: FinishReason
    error: str | None = None


EngineEvent = FrameEvent | MarkEvent | DoneEvent


class Outbox:
    """Engine -> consumer events. Only the engine thread appends."""

    def __init__(self, on_drain: Callable[[], None], limit: int):
        self._events: deque = deque()
        self._limit = limit  # the engine pauses the stream at this many pending frames
        self._cv = threading.Condition()
        self.pending_frames = 0
        self._want = 1  # frames the waiting consumer can use at once
        self._on_drain = on_drain

    def put(self, event: EngineEvent) -> None:
        frame = isinstance(event, FrameEvent)
        with self._cv:
            self._events.append(event)
            self.pending_frames += frame
            # Wake the consumer only when it can do something: on 2 cores every
            # needless wake-up steals a core from the batched forward pass.
            if not frame or self.pending_frames >= self._want:
                self._cv.notify()

    def take(self, want: int = 1, timeout: float | None = None) -> list[EngineEvent]:
        """Wait until `want` frames (or any other event) are queued, then take everything."""
        want = min(want, self._limit)
        with self._cv:
            self._want = want
            self._cv.wait_for(lambda: self.pending_frames >= want or len(self._events) > self.pending_frames, timeout)
            events, self._events = list(self._events), deque()
            self.pending_frames = 0
        self._on_drain()  # the engine may have paused this stream for lagging
        return events


class UtteranceStream:
    """Iterate for AudioChunk and TimingMark events, ending with one Finished."""

    def __init__(
        self,
        seq,
        outbox: Outbox,
        codec: Codec,
        stream_cfg: StreamConfig,
        sample_rate: int,
        chunk_frames: int | None,
        cancel: Callable[[], None],
        spans: list[tuple[int, int]],
        units: list[str],
        decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.seq = seq
        self.spans = spans  # character span of each text unit, for timing marks
        self.units = units
        self._outbox = outbox
        self._codec = codec
        self._stream_cfg = stream_cfg
        self.sample_rate = sample_rate
        self._chunk_frames = chunk_frames
        self._decode = decode  # None: codec.decode on this thread
        self._cancel = cancel
        self.submitted_at = time.perf_counter()
        self.finished: Finished | None = None
        self._done = False

    @property
    def utterance_id(self) -> int:
        return self.seq.seq_id

    @property
    def cached_frames(self) -> int:
        return self.seq.cached_on_admit

    def cancel(self) -> None:
        """Stop at the next engine step; nothing more is yielded after this returns."""
        if not self._done:
            self._done = True
            self._cancel()

    def events(self, want: Callable[[], int] = lambda: 8) -> Iterator[EngineEvent]:
        """The engine's raw events, ending with a DoneEvent. `want()` says how many frames
        are worth waking up for next."""
        try:
            while not self._done:
                for event in self._outbox.take(want(), timeout=1.0):
                    if self._done:
                        return
                    yield event
                    if isinstance(event, DoneEvent):
                        self._done = True
                        return
        finally:
            self.cancel()  # the consumer stopped early: free the engine's work now

    def __iter__(self) -> Iterator[AudioChunk | TimingMark | Finished]:
        streamer = AudioStreamer(self._codec, self._stream_cfg, self.sample_rate, self._chunk_frames, self._decode)
        offset, ttfa, frames, frame_ms = 0, None, 0, 1000.0 / self._codec.frame_rate
        done = DoneEvent(FinishReason.CANCELLED)
        try:
            for event in self.events(streamer.frames_wanted):
                if isinstance(event, FrameEvent):
                    frames += 1
                    latent = event.latent  # channel 0 of the ids is text/control, not audio
                    out = streamer.push(event.ids[None, 1:] if latent is None else latent[None])
                    if out is not None and len(out):
                        ttfa = ttfa if ttfa is not None else (time.perf_counter() - self.submitted_at) * 1000
                        yield AudioChunk(out.numpy().astype(np.float32), offset, self.sample_rate, False)
                        offset += len(out)
                elif isinstance(event, MarkEvent):
                    i = event.text_index
                    yield TimingMark(i, event.frame * frame_ms, *self.spans[i], self.units[i])
                else:
                    done = event
                    if done.reason != FinishReason.CANCELLED:
                        out = streamer.finish()
                        if ttfa is None and len(out):
                            ttfa = (time.perf_counter() - self.submitted_at) * 1000
                        yield AudioChunk(out.numpy().astype(np.float32), offset, self.sample_rate, True)
                        offset += len(out)
        except Exception as exc:  # the codec failed (the audio thread reports it here): end this stream only
            self.cancel()
            done = DoneEvent(
                FinishReason.ERROR, f"engine request {self.seq.seq_id}: audio decoding: {type(exc).__name__}: {exc}"
            )
        self.finished = Finished(
            done.reason,
            frames,
            offset / self.sample_rate,
            self.seq.prompt_len,
            self.seq.cached_on_admit,
            ttfa,
            done.error,
        )
        yield self.finished

    def wait_frames(self) -> torch.Tensor:
        """Collect every generated frame [n, channels] without decoding audio (tests, benchmarks)."""
        rows = []
        for event in self.events():
            if isinstance(event, FrameEvent):
                rows.append(event.ids)
            elif isinstance(event, DoneEvent):
                self.finished = Finished(
                    event.reason, len(rows), 0.0, self.seq.prompt_len, self.seq.cached_on_admit, None, event.error
                )
        return torch.stack(rows) if rows else torch.empty((0, len(self.seq.last_frame)), dtype=torch.long)
