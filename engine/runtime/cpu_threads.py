"""How many CPU threads torch uses for work done on a caller's thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's ops in this block on the calling thread alone.

    For the small work the engine does on its callers' threads: planning an utterance (the
    duration model over one line) and resampling a stream's chunks. Torch hands even such
    small ops to an OpenMP team of every core, and on 2 cores the team's second thread waits
    for the core that the engine thread or the audio process holds. Measured on 2 cores with
    the codec in its own process, warm first chunks: resampling took 0.3 ms on one thread
    and 4-24 ms in about half the runs on two, planning 1.6 ms against up to 38 ms
    (docs/benchmarks.md). The count is a per-thread setting in torch: it is restored after."""
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)
