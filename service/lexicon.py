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
import re
from pathlib import Path

from service.watched_file import WatchedFile

log = logging.getLogger(__name__)


class Lexicon:
    def __init__(self, path: str | Path | None, phonemes_supported: bool = False, check_every_s: float = 1.0):
        self.path = Path(path) if path else None
        self.phonemes_supported = phonemes_supported
        self.error: str | None = None  # why the last reload failed, if it did
        self._entries: dict[str, str] = {}
        self._pattern: re.Pattern | None = None
        self._file = WatchedFile(self.path, check_every_s) if self.path else None
        self._reload()

    @property
    def entries(self) -> dict[str, str]:
        self._reload()
        return dict(self._entries)

    def apply(self, text: str) -> str:
        """Replace every overridden word in `text` with its pronunciation."""
        self._reload()
        pattern, entries = self._pattern, self._entries
        if pattern is None:
            return text
        # .get: a pattern matched case-insensitively may fold differently from .lower() ("ſ").
        return pattern.sub(lambda m: entries.get(m[0].lower(), m[0]), text)

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            text = self._file.poll()
        except FileNotFoundError:
            if self._file.seen:
                log.warning(
                    "pronunciation dictionary %s was removed; keeping %d entries", self.path, len(self._entries)
                )
            return
        except OSError as exc:
            text, self.error = None, f"{self.path}: {exc}"
            log.error("pronunciation dictionary not reloaded, keeping the previous one: %s", self.error)
        if text is None:
            return
        try:
            raw = json.loads(text)
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
