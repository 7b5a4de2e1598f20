"""Character voices: validated, tokenised once, kept in a store and in memory.

A voice is stored as its metadata, the reference recording (16-bit, original rate) and
the tokenised prompt (service/voice_store.py: a folder, or Redis shared by replicas). An
entry that cannot be read is listed as broken and skipped; it never stops the server.

The reference is kept so that a voice can be tokenised again when the model's codec or
front end changes (the prompt's key says which one made it). With a shared store, a
thread polls it and applies what other replicas registered, changed or deleted.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine import Engine, VoicePrompt
from engine.audio import from_pcm16, to_pcm16
from service.audio_input import MAX_SECONDS, Reference, check_speech, decode_wav
from service.voice_store import FolderStore, Record, RedisStore, StoreUnavailable, VoiceExists, open_store

log = logging.getLogger(__name__)
VOICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# As stored: a tenant's voices carry "<tenant>." in front (service/auth.py), which no
# public id can contain.
STORED_ID = re.compile(r"(?:[a-z0-9][a-z0-9_-]{0,31}\.)?[a-z0-9][a-z0-9_-]{0,63}")
MAX_TRANSCRIPT_CHARS = 1000


class VoiceNotFound(KeyError):
    pass


class VoiceCorrupt(RuntimeError):
    pass


class RegistrationsBusy(RuntimeError):
    """More registrations are waiting than the library queues; the caller should retry later."""

    retry_after_s = 10.0  # about one registration's time (its codec adaptation)


@dataclass(frozen=True)
class VoiceInfo:
    voice_id: str
    display_name: str
    transcript: str
    language: str
    reference_seconds: float
    created_at: str
    demo: bool = False


@dataclass(frozen=True)
class LoadedVoice:
    info: VoiceInfo
    prompt: VoicePrompt


def check_voice_id(voice_id: str, stored: bool = False) -> str:
    if not (STORED_ID if stored else VOICE_ID).fullmatch(voice_id or ""):
        raise ValueError(f"voice_id {voice_id!r} must match [a-z0-9][a-z0-9_-]{{0,63}}")
    return voice_id


class VoiceLibrary:
    """All voices of one server: in its store, and their prompts in memory.

    `store` is a folder, a redis:// URL, or an open store. A shared store is polled every
    `sync_every_s` seconds by a thread of the library's own; `close()` stops it."""

    def __init__(
        self,
        store: str | Path | FolderStore | RedisStore,
        engine: Engine,
        max_pending: int = 4,
        sync_every_s: float = 0.5,
    ):
        self.store = store if isinstance(store, (FolderStore, RedisStore)) else open_store(store)
        self.engine = engine
        # What this model clones from, within what the service takes at all.
        self.max_reference_seconds = min(MAX_SECONDS, engine.max_reference_seconds or MAX_SECONDS)
        self._voices: dict[str, LoadedVoice] = {}
        self.broken: dict[str, str] = {}
        self._versions: dict[str, int] = {}  # the stored version each loaded or broken voice is
        self._lock = threading.RLock()  # guards the three dicts
        self._changing = threading.Lock()  # one change at a time, from the store write to publishing
        # Making a prompt takes seconds (the codec is tuned to the voice), so it runs outside
        # _changing: deletes and other voices' publishes never wait behind it. One at a time,
        # though, to leave the other core to live speech; at most max_pending (each holding
        # its reference audio) wait or run, the rest are refused.
        self._tokenising = threading.Lock()
        self.max_pending, self._pending = max_pending, 0
        self._closed = threading.Event()
        self.store_down = False
        try:
            self.sync()
        except StoreUnavailable as exc:
            self.store_down = True
            log.error("%s; starting without its voices until it answers", exc)
        self._syncer = None
        if self.store.shared:
            self._syncer = threading.Thread(target=self._sync_loop, args=(sync_every_s,), name="voice-sync")
            self._syncer.daemon = True
            self._syncer.start()

    def close(self) -> None:
        self._closed.set()
        if self._syncer is not None:
            self._syncer.join()

    # ---- queries -------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Registrations waiting for or making their prompt now."""
        with self._lock:
            return self._pending

    def get(self, voice_id: str) -> LoadedVoice:
        with self._lock:
            if voice_id in self._voices:
                return self._voices[voice_id]
            if voice_id in self.broken:
                raise VoiceCorrupt(f"voice {voice_id!r} is stored but unreadable: {self.broken[voice_id]}")
        raise VoiceNotFound(f"no voice {voice_id!r}; ListVoices shows the registered ones")

    def list(self) -> list[LoadedVoice]:
        with self._lock:
            return sorted(self._voices.values(), key=lambda v: v.info.voice_id)

    # ---- changes -------------------------------------------------------------
    def register(
        self,
        voice_id: str,
        wav: bytes,
        transcript: str,
        display_name: str = "",
        language: str = "en",
        overwrite: bool = False,
        demo: bool = False,
    ) -> LoadedVoice:
        """Validate, tokenise and store a voice. Raises ValueError for bad input."""
        check_voice_id(voice_id, stored=True)
        transcript = " ".join(transcript.split())
        if not transcript:
            raise ValueError("transcript is empty; give the words spoken in the reference")
        if len(transcript) > MAX_TRANSCRIPT_CHARS:
            raise ValueError(f"transcript has {len(transcript)} characters; the limit is {MAX_TRANSCRIPT_CHARS}")
        ref = decode_wav(wav)
        check_speech(ref, self.max_reference_seconds)
        with self._lock:
            self._check_free(voice_id, overwrite)  # fail fast, before seconds of work
            if self._pending >= self.max_pending:
                raise RegistrationsBusy(
                    f"{self._pending} voice registrations are already in progress; retry when one has finished"
                )
            self._pending += 1
        try:
            info = VoiceInfo(
                voice_id,
                display_name or voice_id,
                transcript,
                language or "en",
                round(ref.seconds, 3),
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                demo,
            )
            with self._tokenising:
                voice = LoadedVoice(info, self._tokenise(info, ref))
            with self._changing:
                with self._lock:
                    self._check_free(voice_id, overwrite)  # another registration may have taken it meanwhile
                # A shared store checks `overwrite` again, against every replica's voices.
                record, prompt = _record(info, ref), voice.prompt
                version = self.store.write(voice_id, record, prompt.key, prompt.to_bytes(), overwrite)
                old = self._publish(voice, version)
        finally:
            with self._lock:
                self._pending -= 1
        if old is not None:
            self.engine.unpin_voice(old.prompt)
        return voice

    def _check_free(self, voice_id: str, overwrite: bool) -> None:
        if not overwrite and (voice_id in self._voices or voice_id in self.broken):
            raise VoiceExists(f"voice {voice_id!r} already exists; set overwrite to replace it")

    def delete(self, voice_id: str) -> None:
        with self._changing:
            with self._lock:
                known = voice_id in self._versions
            # The store first: if it is down, nothing changes here either.
            if not self.store.delete(voice_id) and not known:
                raise VoiceNotFound(f"no voice {voice_id!r}")
            voice = self._forget(voice_id)
        if voice is not None:
            self.engine.unpin_voice(voice.prompt)  # its cached blocks age out through LRU

    # ---- the store -----------------------------------------------------------
    def sync(self) -> list[str]:
        """Load what the store has that this library lacks or holds in an older version,
        and drop what it no longer has. Returns the ids that changed."""
        seq, versions = self.store.snapshot()
        changed = []
        for voice_id, version in versions.items():
            with self._lock:
                known = self._versions.get(voice_id)
            if (known is None or version > known) and self._load(voice_id, version):
                changed.append(voice_id)
        with self._changing:
            with self._lock:
                # A voice missing from the snapshot was deleted, unless it was written after it.
                gone = [v for v, known in self._versions.items() if v not in versions and known <= seq]
            for voice_id in gone:
                voice = self._forget(voice_id)
                if voice is not None:
                    self.engine.unpin_voice(voice.prompt)
                changed.append(voice_id)
        if changed and self.store.shared:
            log.info("voice store: %d voices changed (%s)", len(changed), ", ".join(changed[:10]))
        return changed

    def _sync_loop(self, every_s: float) -> None:
        while not self._closed.wait(every_s):
            try:
                self.sync()
                if self.store_down:
                    log.info("the voice store at %s answers again", self.store)
                self.store_down = False
            except StoreUnavailable as exc:
                if not self.store_down:
                    log.warning("%s; the voices already loaded keep working", exc)
                self.store_down = True
            except Exception:  # a bug here must not end the thread
                log.exception("voice store sync failed")

    def _load(self, voice_id: str, version: int) -> bool:
        """Read one stored voice (tokenising it if no prompt for this model is stored) and
        publish it; False if it vanished meanwhile."""
        key = self.engine.voice_key(voice_id)
        try:
            stored = self.store.read(voice_id, key)
        except (KeyError, FileNotFoundError):
            return False  # deleted between the snapshot and the read
        except StoreUnavailable:
            raise
        except Exception as exc:  # any unreadable entry is reported, never fatal
            return self._mark_broken(voice_id, version, f"{type(exc).__name__}: {exc}")
        try:
            info = VoiceInfo(**json.loads(stored.record["meta"].tobytes()))
            ref = Reference(from_pcm16(stored.record["reference"]), int(stored.record["sample_rate"]))
            prompt = None if stored.prompt is None else VoicePrompt.from_bytes(stored.prompt)
            if info.voice_id != voice_id:
                raise ValueError(f"the entry holds voice {info.voice_id!r}")
        except Exception as exc:  # any unreadable entry is reported, never fatal
            return self._mark_broken(voice_id, stored.version, f"{type(exc).__name__}: {exc}")
        if prompt is None or prompt.key != key:
            log.info("voice %s was tokenised for another model; tokenising it for this one", voice_id)
            try:
                with self._tokenising:
                    prompt = self._tokenise(info, ref)
            except Exception as exc:  # reported, never fatal
                reason = f"could not tokenise it for this model: {type(exc).__name__}: {exc}"
                return self._mark_broken(voice_id, stored.version, reason)
            try:
                self.store.add_prompt(voice_id, stored.version, key, prompt.to_bytes())  # once for all replicas
            except StoreUnavailable as exc:
                log.warning("voice %s: its new prompt is kept here only (%s)", voice_id, exc)
        with self._changing:
            with self._lock:
                if self._versions.get(voice_id, -1) >= stored.version:
                    return False  # a newer one was published meanwhile
            old = self._publish(LoadedVoice(info, prompt), stored.version)
        if old is not None:
            self.engine.unpin_voice(old.prompt)
        return True

    def _publish(self, voice: LoadedVoice, version: int) -> LoadedVoice | None:
        with self._lock:
            voice_id = voice.info.voice_id
            old = self._voices.get(voice_id)
            self._voices[voice_id], self._versions[voice_id] = voice, version
            self.broken.pop(voice_id, None)
        return old

    def _forget(self, voice_id: str) -> LoadedVoice | None:
        with self._lock:
            self.broken.pop(voice_id, None)
            self._versions.pop(voice_id, None)
            return self._voices.pop(voice_id, None)

    def _mark_broken(self, voice_id: str, version: int, reason: str) -> bool:
        log.error("voice %s in %s is unusable (%s); skipping it", voice_id, self.store, reason)
        with self._lock:
            self.broken[voice_id], self._versions[voice_id] = reason, version
            old = self._voices.pop(voice_id, None)
        if old is not None:
            self.engine.unpin_voice(old.prompt)
        return True

    def _tokenise(self, info: VoiceInfo, ref: Reference) -> VoicePrompt:
        return self.engine.make_voice(ref.samples, ref.sample_rate, info.transcript, info.voice_id)


def _record(info: VoiceInfo, ref: Reference) -> Record:
    return {
        "meta": np.frombuffer(json.dumps(asdict(info)).encode(), dtype=np.uint8),
        "reference": to_pcm16(ref.samples),
        "sample_rate": np.int64(ref.sample_rate),
    }
