"""Character voices, persisted one file per voice and tokenised once.

Each voice is `<voices_dir>/<voice_id>.voice`, an npz holding its metadata, the
reference recording (16-bit, original rate) and the tokenised prompt. Writes go
to a temporary file that is fsynced and renamed over the old one, so a crash
leaves either the old voice or the new one. A file that cannot be read is
listed as broken and skipped; it never stops the server.

The reference is kept so that a voice can be tokenised again when the model's
codec or front end changes (the prompt's key says which one made it).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine import Engine, VoicePrompt
from engine.audio import from_pcm16, to_pcm16
from service.audio_input import MAX_SECONDS, Reference, check_speech, decode_wav

log = logging.getLogger(__name__)
VOICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# As stored: a tenant's voices carry "<tenant>." in front (service/auth.py), which no
# public id can contain.
STORED_ID = re.compile(r"(?:[a-z0-9][a-z0-9_-]{0,31}\.)?[a-z0-9][a-z0-9_-]{0,63}")
MAX_TRANSCRIPT_CHARS = 1000


class VoiceNotFound(KeyError):
    pass


class VoiceExists(ValueError):
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
    """All voices of one server: on disk, and their prompts in memory."""

    def __init__(self, directory: str | Path, engine: Engine, max_pending: int = 4):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        # What this model clones from, within what the service takes at all.
        self.max_reference_seconds = min(MAX_SECONDS, engine.max_reference_seconds or MAX_SECONDS)
        self._voices: dict[str, LoadedVoice] = {}
        self.broken: dict[str, str] = {}
        self._lock = threading.RLock()  # guards the two dicts
        self._changing = threading.Lock()  # one register/delete at a time, check to publish
        # Making a prompt takes seconds (the codec is tuned to the voice), so it runs outside
        # _changing: deletes and other voices' publishes never wait behind it. One at a time,
        # though, to leave the other core to live speech; at most max_pending (each holding
        # its reference audio) wait or run, the rest are refused.
        self._tokenising = threading.Lock()
        self.max_pending, self._pending = max_pending, 0
        for leftover in self.dir.glob(".tmp-*"):
            leftover.unlink(missing_ok=True)  # a write that a crash interrupted
        for path in sorted(self.dir.glob("[!.]*.voice")):
            self._load(path)

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
        """Validate, tokenise and persist a voice. Raises ValueError for bad input."""
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
                self._write(voice, ref)
                with self._lock:
                    old = self._voices.get(voice_id)
                    self._voices[voice_id] = voice
                    self.broken.pop(voice_id, None)
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
        with self._changing, self._lock:
            voice = self._voices.pop(voice_id, None)
            was_broken = self.broken.pop(voice_id, None) is not None
            if voice is None and not was_broken:
                raise VoiceNotFound(f"no voice {voice_id!r}")
            (self.dir / f"{voice_id}.voice").unlink(missing_ok=True)
        if voice is not None:
            self.engine.unpin_voice(voice.prompt)  # its cached blocks age out through LRU

    # ---- storage -------------------------------------------------------------
    def _tokenise(self, info: VoiceInfo, ref: Reference) -> VoicePrompt:
        return self.engine.make_voice(ref.samples, ref.sample_rate, info.transcript, info.voice_id)

    def _write(self, voice: LoadedVoice, ref: Reference) -> None:
        buf = io.BytesIO()
        np.savez(
            buf,
            meta=np.frombuffer(json.dumps(asdict(voice.info)).encode(), dtype=np.uint8),
            reference=to_pcm16(ref.samples),
            sample_rate=np.int64(ref.sample_rate),
            prompt=np.frombuffer(voice.prompt.to_bytes(), dtype=np.uint8),
        )
        final = self.dir / f"{voice.info.voice_id}.voice"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

    def _load(self, path: Path) -> None:
        voice_id = path.stem
        try:
            with np.load(path) as z:
                info = VoiceInfo(**json.loads(z["meta"].tobytes()))
                ref = Reference(from_pcm16(z["reference"]), int(z["sample_rate"]))
                prompt = VoicePrompt.from_bytes(z["prompt"].tobytes())
            if info.voice_id != voice_id:
                raise ValueError(f"file holds voice {info.voice_id!r}")
        except Exception as exc:  # any unreadable entry is reported, never fatal
            self.broken[voice_id] = f"{type(exc).__name__}: {exc}"
            log.error("voice file %s is unreadable (%s); skipping it", path, self.broken[voice_id])
            return
        voice = LoadedVoice(info, prompt)
        if prompt.key != self.engine.voice_key(voice_id):
            log.info("voice %s was tokenised for another model; tokenising it again", voice_id)
            try:
                voice = LoadedVoice(info, self._tokenise(info, ref))
                self._write(voice, ref)
            except Exception as exc:  # reported, never fatal
                self.broken[voice_id] = f"could not tokenise it for this model: {type(exc).__name__}: {exc}"
                log.error("voice %s: %s", voice_id, self.broken[voice_id])
                return
        self._voices[voice_id] = voice
