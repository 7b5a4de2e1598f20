"""One thread that turns the frames of every stream into waveform, in batches.

Why: with each consumer decoding its own chunks, 16 streams meant 16 threads
each running the codec on a window of a few frames. Every call streamed all of
the codec's weights through the cache, and every thread brought its own OpenMP
team onto a 2-core machine. Here the windows that all streams have queued are
decoded together: windows of equal length in one batched call (the codec is not
causal and normalises over its window, so only equal lengths batch exactly; and
a codec holds one voice's adapter at a time, so one call per adapter too),
shortest first, one call at a time (what was queued meanwhile joins the choice of
the next), so a new stream's small chunk does not wait behind the long chunks of
streams that are already playing.

Consumers still own everything per stream (crossfades, resampling, timing); they
only hand the codec call to this thread and block until their window is back.

A codec that decodes causally with per-stream state (`decode_streams`, the Mimi
decoder of pocket-tts) batches the same way: the `adapter` slot then carries the
stream's state, and windows of equal length decode together whatever their streams'
positions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import torch

from engine.codecs.adapt import Adapter
from engine.codecs.base import Codec, is_stateful
from engine.runtime.busy import BusyMeter

log = logging.getLogger(__name__)
SMALL_CALL_FRAMES = 2
T = TypeVar("T")


def next_call(jobs: list[T], key: Callable[[T], tuple[int, int]], max_batch: int) -> tuple[list[T], list[T]]:
    """(the windows of the next codec call, the jobs left). A call takes windows of one `key`
    (window length, and voice adapter unless the codec takes one per row: it batches only equal
    lengths), the smallest key first, at most `max_batch` of them in arrival order. Shared by the
    audio thread and the audio process.

    A worker makes one call, then takes in what was queued meanwhile before choosing the next,
    so a new stream's short window waits for one call, not for every window queued before it:
    the chunk ramp sizes a stream's chunks by the audio its listener holds, so the shortest
    window has the least cushion."""
    if not jobs:
        return [], []
    keys = [key(job) for job in jobs]
    first = min(keys)
    part = [job for job, k in zip(jobs, keys) if k == first][:max_batch]
    taken = {id(job) for job in part}
    return part, [job for job in jobs if id(job) not in taken]


def adapter_arg(adapters: list[Adapter | None]) -> Adapter | list[Adapter | None] | None:
    """What one codec call takes for its windows' voice adapters: the one they share, else one per
    row (engine.codecs.rows). Only mixed calls take the per-row path: it costs ~1 ms more per call,
    and its biases add in float32 where the packed bfloat16 kernels round them, so a window's
    samples differ by that rounding (~1e-2 at most) between a call of its voice alone and a mixed one."""
    return adapters[0] if all(a is adapters[0] for a in adapters) else adapters


def per_row(codec: Codec) -> bool:
    """Whether `codec.decode_batch` takes a list of adapters, one per row."""
    return bool(getattr(codec, "per_row_adapters", False))


class AudioWorker:
    def __init__(self, codec: Codec, max_batch: int = 16, num_threads: int = 0, busy_window_s: float = 5.0):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.codec = codec
        self.num_threads = num_threads  # torch CPU threads of this thread's large codec calls; 0: the default
        self.stateful = is_stateful(codec)
        self.mixed = self.stateful or per_row(codec)  # windows of any voices (or streams) batch together
        self.max_batch = max_batch
        self.batches = 0  # codec calls made (a stats figure; one thread writes it)
        self.windows = 0  # windows decoded
        self.busy = BusyMeter(busy_window_s)
        self._jobs: list[tuple[torch.Tensor, Adapter | None, Future]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._fault = False  # inject_fault
        self._thread = threading.Thread(target=self._loop, name="audio", daemon=True)
        self._thread.start()

    def decode(self, codes: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
        """Codes [frames, codebooks] (or the codec's float latents) -> wave, as `codec.decode`
        gives it (through the voice's `adapter`, if any; for a stateful codec, `adapter` is the
        stream's state); blocks until done.

        After `close()` the caller's own thread decodes, so a stream that is still
        finishing while the engine shuts down gets its audio rather than an error."""
        with self._cv:
            queued: Future | None = None
            if not self._closed:
                queued = Future()
                self._jobs.append((codes, adapter, queued))
                self._cv.notify()
        if queued is not None:
            return queued.result()
        return self._decode_batch(codes[None], [adapter])[0]

    def _decode_batch(self, codes: torch.Tensor, adapters: list) -> torch.Tensor:
        if self.stateful:
            return self.codec.decode_streams(adapters, codes)
        return self.codec.decode_batch(codes, adapter_arg(adapters))

    @property
    def queued(self) -> int:
        """Windows waiting for the thread (not counting a batch being decoded)."""
        with self._cv:
            return len(self._jobs)

    def inject_fault(self) -> None:
        """Test hook: the next batch of windows fails as a bug in this thread would."""
        self._fault = True

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._jobs or self._closed)
                jobs, self._jobs = next_call(self._jobs, self._key, self.max_batch)
                closed = self._closed and not self._jobs
            start = time.monotonic()
            try:
                self._run(jobs)  # windows queued before close() are still decoded
            except Exception as exc:  # a bug here fails the windows it held, never the thread
                log.error("audio worker: a batch failed", exc_info=exc)
                for _, _, fut in jobs:
                    if not fut.done():
                        fut.set_exception(exc)
            self.busy.record(time.monotonic() - start)
            if closed:
                return

    def _threads_for(self, frames: int) -> None:
        """One thread for a call of a frame or two (a new stream's first chunk, where time to first
        audio is decided): the engine's next step holds a core then, and a team that shares it
        waits for it (pocket-tts warm TTFA 46 ms on one thread, 51-53 on two). Larger calls get
        every thread they were given.

        torch's count is per thread, but a thread's first call takes the last count any thread set
        (the engine thread sets its own before each step): so read it (that initialises) and set."""
        if self.num_threads:
            want = 1 if frames <= SMALL_CALL_FRAMES else self.num_threads
            if torch.get_num_threads() != want:
                torch.set_num_threads(want)

    def _run(self, jobs: list[tuple[torch.Tensor, Adapter | None, Future]]) -> None:
        """One codec call for `jobs` (one `next_call`)."""
        if self._fault:
            self._fault = False
            raise RuntimeError("injected fault in the audio worker")
        if not jobs:
            return
        self._threads_for(len(jobs) * len(jobs[0][0]))
        try:
            waves = self._decode_batch(torch.stack([c for c, _, _ in jobs]), [a for _, a, _ in jobs])
        except Exception as exc:  # fails only the windows of this call
            for _, _, fut in jobs:
                fut.set_exception(exc)
            return
        self.batches += 1
        self.windows += len(jobs)
        for (_, _, fut), wave in zip(jobs, waves):
            fut.set_result(wave)

    def _key(self, job: tuple[torch.Tensor, Adapter | None, Future]) -> tuple[int, int]:
        # (A stateful codec's "adapter" is a stream's state: any streams batch together.)
        return len(job[0]), 0 if self.mixed else id(job[1])
