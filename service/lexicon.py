"""Pronunciation overrides from a JSON file that reloads while the server runs.

The file maps a word to how it should be said, either as a respelling in plain
letters or as phonemes between slashes:

    {"Gimli": "gim lee", "Sauron": "/ˈsaʊɹɒn/", "GG": "good game"}

Words match whole and case-insensitively. Respellings work with every model;
phoneme entries need a model whose front end reads phonemes (Capabilities says
which) and are skipped, with a warning, otherwise. Edits are picked up within
`check_every_s` of being saved; a file that does not parse is reported and the
previous dictionary stays in force.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class Lexicon:
    def __init__(self, path: str | Path | None, phonemes_supported: bool = False, check_every_s: float = 1.0):
        self.path = Path(path) if path else None
        self.phonemes_supported = phonemes_supported
        self.check_every_s = check_every_s
        self.error: str | None = None  # why the last reload failed, if it did
        self._entries: dict[str, str] = {}
        self._pattern: re.Pattern | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload()

    @property
    def entries(self) -> dict[str, str]:
        self._maybe_reload()
        return dict(self._entries)

    def apply(self, text: str) -> str:
        """Replace every overridden word in `text` with its pronunciation."""
        self._maybe_reload()
        pattern, entries = self._pattern, self._entries
        if pattern is None:
            return text
        # .get: a pattern matched case-insensitively may fold differently from .lower() ("ſ").
        return pattern.sub(lambda m: entries.get(m[0].lower(), m[0]), text)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < self.check_every_s:
            return
        with self._lock:
            self._checked = now
            self._reload()

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                log.warning(
                    "pronunciation dictionary %s was removed; keeping %d entries", self.path, len(self._entries)
                )
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and k.strip() for k, v in raw.items()
            ):
                raise ValueError("expected a JSON object of word -> pronunciation strings")
        except (OSError, ValueError) as exc:
            self.error = f"{self.path}: {exc}"
            log.error("pronunciation dictionary not reloaded, keeping the previous one: %s", self.error)
            return
        entries = {}
        for word, say in raw.items():
            if say.startswith("/") and say.endswith("/") and not self.phonemes_supported:
                log.warning("%s: %r is given as phonemes, which this model cannot read; skipped", self.path, word)
                continue
            entries[word.strip().lower()] = say
        self._entries, self.error = entries, None
        words = sorted(entries, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE) if words else None
        )
        log.info("pronunciation dictionary %s: %d entries", self.path, len(entries))
