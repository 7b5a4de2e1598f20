"""One engine utterance seen from asyncio, and its timing marks as words and phonemes.

The engine's UtteranceStream is a blocking iterator that decodes audio in the
caller's thread. A worker thread per utterance drains it into a small asyncio
queue, so codec work never blocks the event loop, and a full queue (a slow
client) stops the worker, which stops the engine stream through its own
back-pressure. Memory per utterance therefore stays at a few chunks.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass
from enum import Enum

from engine import AudioChunk, Engine, Finished, SamplingParams, TimingMark, VoicePrompt


@dataclass(frozen=True)
class Audio:
    data: bytes
    offset: int  # samples of this utterance before this chunk
    is_last: bool


class MarkKind(Enum):
    WORD = "word"
    PHONEME = "phoneme"


@dataclass(frozen=True)
class Mark:
    kind: MarkKind
    text: str
    start_ms: float
    end_ms: float
    char_start: int
    char_end: int


class MarkTracker:
    """Turns the engine's "moved to unit i at t ms" marks into closed word and phoneme spans.

    A unit's end is the next unit's start, so each span is released one mark late
    (or when the utterance ends)."""

    def __init__(self, text: str):
        self.text = text
        self.words = [(m.start(), m.end()) for m in re.finditer(r"[\w'’-]+", text)]
        self._unit: TimingMark | None = None
        self._word: tuple[int, float] | None = None  # (word index, start_ms)

    def _word_of(self, char: int) -> int | None:
        for i, (a, b) in enumerate(self.words):
            if a <= char < b:
                return i
        return None

    def _close_word(self, end_ms: float) -> list[Mark]:
        if self._word is None:
            return []
        i, start = self._word
        self._word = None
        a, b = self.words[i]
        return [Mark(MarkKind.WORD, self.text[a:b], start, end_ms, a, b)]

    def push(self, mark: TimingMark) -> list[Mark]:
        out = []
        if self._unit is not None:
            u = self._unit
            out.append(Mark(MarkKind.PHONEME, u.unit, u.start_ms, mark.start_ms, u.char_start, u.char_end))
        word = self._word_of(mark.char_start)
        if self._word is not None and word != self._word[0]:
            out += self._close_word(mark.start_ms)
        if word is not None and self._word is None:
            self._word = (word, mark.start_ms)
        self._unit = mark
        return out

    def finish(self, end_ms: float) -> list[Mark]:
        out = []
        if self._unit is not None:
            u, self._unit = self._unit, None
            out.append(Mark(MarkKind.PHONEME, u.unit, u.start_ms, end_ms, u.char_start, u.char_end))
        return out + self._close_word(end_ms)


class Utterance:
    """Submit to the engine, drain on a worker thread, read with `async for`."""

    def __init__(self, turn_id: str, index: int, source_text: str, text: str):
        self.turn_id, self.index = turn_id, index
        self.source_text, self.text = source_text, text
        self.cancelled = False
        self.started = False
        self.utterance_id = 0
        self.voice_cached = False
        self.ready_at: float | None = None  # when it could start playing (see Conversation)
        self.submitted_at = 0.0
        self._queue: asyncio.Queue | None = None
        self._stop = threading.Event()
        self._stream = None

    def start(
        self,
        engine: Engine,
        voice: VoicePrompt,
        sampling: SamplingParams,
        sample_rate: int,
        chunk_frames: int,
        float32: bool,
        queue_size: int,
        after: Utterance | None = None,
    ) -> None:
        """Submit now. Raises EngineOverloaded or ValueError, leaving nothing behind.
        `after`: the utterance a listener hears just before this one (see Engine.submit)."""
        if self.started or self.cancelled:
            return
        before = after._stream if after is not None else None
        self._stream = engine.submit(voice, self.text, sampling, sample_rate, chunk_frames, after=before)
        self.started, self.submitted_at = True, time.perf_counter()
        self.utterance_id = self._stream.utterance_id
        self._queue = asyncio.Queue()  # bounded by _slots, which the drain thread can wait on
        self._slots = threading.Semaphore(queue_size)
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._drain, args=(loop, float32), name=f"utt-{self.utterance_id}", daemon=True).start()

    def cancel(self) -> None:
        """Call from the event loop. Stops the engine stream and ends `events()` at once."""
        self.cancelled = True
        self._stop.set()
        if self._stream is not None:
            self._stream.cancel()
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)  # wakes a reader waiting in events()

    async def events(self):
        """Audio, Mark and finally Finished (or an Exception from the worker)."""
        tracker = MarkTracker(self.text)
        while True:
            event = await self._queue.get()
            if event is None or self.cancelled:
                return
            self._slots.release()
            if isinstance(event, Finished):
                self.voice_cached = event.cached_frames > 0
                for mark in tracker.finish(event.audio_seconds * 1000):
                    yield mark
                yield event
                return
            if isinstance(event, TimingMark):
                for mark in tracker.push(event):
                    yield mark
            elif isinstance(event, Exception):
                raise event
            else:
                yield event

    def _drain(self, loop: asyncio.AbstractEventLoop, float32: bool) -> None:
        try:
            for event in self._stream:
                if isinstance(event, AudioChunk):
                    event = Audio(event.float32() if float32 else event.pcm16(), event.offset, event.is_last)
                if not self._put(loop, event):
                    return
        except Exception as exc:  # reported to the reader, who fails only this conversation
            self._put(loop, exc)
        finally:
            self._stream.cancel()  # a no-op once finished; frees engine work if we stopped early

    def _put(self, loop: asyncio.AbstractEventLoop, event) -> bool:
        """Hand `event` to the reader without waiting for the event loop to take it: a free slot
        (at most `queue_size` unread events: backpressure on a slow reader), then a callback on
        the loop. Waiting for each put to run on the loop cost a round trip per chunk. False:
        stop draining (cancelled, or the loop is gone)."""
        while not self._slots.acquire(timeout=0.2):
            if self._stop.is_set():
                return False
        if self._stop.is_set():
            return False
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed (the server has stopped): nobody reads
            return False
        return True
