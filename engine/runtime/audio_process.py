"""The audio worker's codec calls in a child process, which has an interpreter lock of its own.

Why: the engine thread's decode step is hundreds of small torch ops, and between any two of
them it must take the GIL back. With the codec decoding in a thread of the same process, each
of the two waits for the other at every op: measured on 2 cores, batch-12 decode ran 22% slower
and the codec 20% slower than alone; with the codec in another process, 9% and 2% (CPU shared,
no lock shared; docs/benchmarks.md). The process decodes what `AudioWorker` would, with the
same batching (one call per window length and voice adapter, every window queued at once).

Only for codecs without per-stream state (the mel codec, the test model's parametric codec):
a stateful codec's streams keep their state in this process, so its windows stay on the thread.

Windows go over a socket pair as numpy arrays (a chunk is a few frames in and ~30 kB out); a voice's
adapter (~30 k numbers) goes once and is kept there under a key until it falls out of a small
LRU. If the process dies, the windows it held fail (their streams end with an error, as a
codec bug would end them) and later windows are decoded on their callers' threads.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

from engine.codecs.base import Codec
from engine.runtime.audio_worker import adapter_arg, next_call, per_row
from engine.runtime.busy import BusyMeter
from engine.runtime.heap import freeze_startup_heap

log = logging.getLogger(__name__)
ADAPTERS_KEPT = 64  # voice adapters the child holds; a voice past that is sent again when it speaks


def _child(conn, make_codec: Callable[[], Codec], max_batch: int) -> None:
    """The child's loop: take every queued message, make one codec call (`next_call`), answer,
    and read the pipe again before the next call."""
    torch.set_num_threads(1)  # one core: the engine thread has the other
    codec = make_codec()
    mixed = per_row(codec)  # windows of every voice in one call
    adapters: dict[int, dict] = {}
    jobs: list[tuple] = []  # (job id, window, adapter key or None, adapter or None)
    fault = closing = False
    freeze_startup_heap()  # (engine/runtime/heap.py)
    conn.send(("ready",))
    while True:
        messages = [] if jobs or closing else [conn.recv()]  # wait only with nothing to do
        while conn.poll():
            messages.append(conn.recv())
        for msg in messages:
            kind = msg[0]
            if kind == "close":
                closing = True  # after the windows sent before it
            elif kind == "adapter":
                adapters[msg[1]] = {k: torch.from_numpy(v) for k, v in msg[2].items()}
            elif kind == "drop":
                adapters.pop(msg[1], None)
            elif kind == "fault":
                fault = True
            else:  # (the adapter is looked up now: a later "drop" must not take it from a queued window)
                jid, window, key = msg[1:]
                jobs.append((jid, window, key, None if key is None else adapters.get(key)))
        if not jobs:
            if closing:
                return
            continue
        start = time.monotonic()
        part, jobs = next_call(jobs, lambda j: (len(j[1]), -1 if mixed or j[2] is None else j[2]), max_batch)
        ids = [j[0] for j in part]
        try:
            if fault:
                fault = False
                raise RuntimeError("injected fault in the audio process")
            if any(j[2] is not None and j[3] is None for j in part):
                raise KeyError("a window's voice adapter never reached the audio process")
            windows = torch.from_numpy(np.stack([j[1] for j in part]))
            waves = codec.decode_batch(windows, adapter_arg([j[3] for j in part]))
            conn.send(("done", ids, [w.numpy() for w in waves], len(part)))
        except Exception as exc:  # fails only the windows of this call
            conn.send(("failed", ids, f"{type(exc).__name__}: {exc}", 0))
        conn.send(("busy", time.monotonic() - start))


class AudioProcess:
    """`AudioWorker`'s interface, decoding in a child process built by `make_codec` (a picklable
    factory that makes the same codec as `codec`, the caller's own copy, used after close)."""

    def __init__(self, codec: Codec, make_codec: Callable[[], Codec], max_batch: int = 16, busy_window_s: float = 5.0):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.codec = codec
        self.max_batch = max_batch
        self.num_threads = 1
        self.batches = 0  # codec calls made (stats; the reader thread writes them)
        self.windows = 0
        self.busy = BusyMeter(busy_window_s)
        # A fresh interpreter, not multiprocessing's: fork would copy the engine's locks mid-use,
        # and spawn re-imports the caller's main script, which a game tool need not guard.
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-m", "engine.runtime.audio_process", str(theirs.fileno())]
        self._proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send((make_codec, max_batch))
        if not self._conn.poll(120) or self._conn.recv() != ("ready",):
            self._proc.kill()
            raise RuntimeError("the audio process did not start")
        self._lock = threading.Lock()  # guards the pipe's sending end and the tables below
        self._pending: dict[int, Future] = {}
        self._next = 0
        self._adapters: OrderedDict[int, tuple[int, dict]] = OrderedDict()  # id(adapter) -> (key, adapter)
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="audio-process-reader", daemon=True)
        self._reader.start()

    @property
    def queued(self) -> int:
        """Windows sent and not yet answered."""
        with self._lock:
            return len(self._pending)

    def decode(self, codes: torch.Tensor, adapter: dict | None = None) -> torch.Tensor:
        """As `AudioWorker.decode`: blocks until the window is decoded. Once the process is
        closed or gone, the caller's own thread decodes."""
        fut: Future | None = None
        with self._lock:
            if not self._closed:
                fut, jid = Future(), self._next
                self._next += 1
                self._pending[jid] = fut
                try:
                    key = None if adapter is None else self._adapter_key(adapter)
                    self._conn.send(("decode", jid, codes.numpy(), key))
                except (OSError, ValueError):  # the process is gone (the reader is about to hear)
                    self._pending.pop(jid, None)
                    fut = None
        if fut is None:
            return self.codec.decode_batch(codes[None], adapter)[0]
        return torch.from_numpy(fut.result())

    def _adapter_key(self, adapter: dict) -> int:
        """The child's key for `adapter`, sending it first if the child lacks it (lock held)."""
        entry = self._adapters.get(id(adapter))
        if entry is not None and entry[1] is adapter:
            self._adapters.move_to_end(id(adapter))
            return entry[0]
        key = self._next
        self._next += 1
        self._conn.send(("adapter", key, {k: v.detach().cpu().numpy() for k, v in adapter.items()}))
        self._adapters[id(adapter)] = (key, adapter)  # (holding it keeps its id from being reused)
        if len(self._adapters) > ADAPTERS_KEPT:
            _, (old, _) = self._adapters.popitem(last=False)
            self._conn.send(("drop", old))
        return key

    def _read(self) -> None:
        try:
            while True:
                msg = self._conn.recv()
                if msg[0] == "busy":
                    self.busy.record(msg[1])
                    continue
                kind, ids, payload, windows = msg
                with self._lock:
                    futs = [self._pending.pop(jid, None) for jid in ids]
                if kind == "done":
                    self.batches += 1
                    self.windows += windows
                    for fut, wave in zip(futs, payload):
                        if fut is not None:
                            fut.set_result(wave)
                else:
                    for fut in futs:
                        if fut is not None:
                            fut.set_exception(RuntimeError(f"audio process: {payload}"))
        except (EOFError, OSError) as exc:
            with self._lock:
                self._closed = True
                pending, self._pending = list(self._pending.values()), {}
            if pending:
                log.error("audio process: ended with %d windows in flight (%s)", len(pending), exc)
            for fut in pending:
                fut.set_exception(RuntimeError("the audio process ended"))

    def inject_fault(self) -> None:
        """Test hook: the child's next batch of windows fails as a codec bug would."""
        with self._lock:
            self._conn.send(("fault",))

    def kill(self) -> None:
        """Test hook: the child dies as an out-of-memory kill would end it."""
        self._proc.kill()
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True  # windows from here on decode on their callers' threads
                try:
                    self._conn.send(("close",))
                except (OSError, ValueError):
                    pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._reader.join(timeout=10)


if __name__ == "__main__":  # the child: AudioProcess starts it with its end of a socket pair
    import signal

    # Ctrl+C in a terminal reaches the whole process group: the server drains and closes this
    # process itself, which must keep decoding until then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    factory, batch = conn.recv()
    try:
        _child(conn, factory, batch)
    except (EOFError, OSError):  # the engine's process ended without closing: so does this one
        pass
