"""A file the server re-reads when it changes (the pronunciation dictionary, the API keys)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class WatchedFile:
    """Looks at `path` at most every `check_every_s` and hands back its text when its
    modification time or size changed since the last look."""

    def __init__(self, path: str | Path, check_every_s: float = 1.0):
        self.path = Path(path)
        self.check_every_s = check_every_s
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()

    @property
    def seen(self) -> bool:
        """Whether the file has been read at least once."""
        return self._stamp is not None

    def poll(self) -> str | None:
        """The file's text if it changed, else None (also when it is not yet time to look).
        Raises OSError when it cannot be read: FileNotFoundError once it is gone."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.check_every_s:
                return None
            self._checked = now
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            return self.path.read_text(encoding="utf-8")
