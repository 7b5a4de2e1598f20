"""Where voices are kept: a folder on one machine, or Redis shared by replicas.

A stored voice is a record (its metadata and reference recording, as numpy arrays) plus
prompts: the voice tokenised for a model. A prompt is only valid for the model that made
it (its key says which), so a shared store keeps one prompt per model key, and a replica
running another model tokenises the voice once and adds its own.

Every write has a version. A shared store's versions come from one counter, so a replica
that polls `snapshot()` can tell a voice deleted before the snapshot from one written
after it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Record = dict[str, np.ndarray]


class VoiceExists(ValueError):
    pass


class StoreUnavailable(RuntimeError):
    """The shared store cannot be reached; voices already loaded keep working."""

    retry_after_s = 2.0


@dataclass(frozen=True)
class Stored:
    record: Record
    version: int
    prompt: bytes | None  # made for the model key that was asked for, if one is stored


def _npz(arrays: Record) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _unnpz(data: bytes) -> Record:
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


class FolderStore:
    """One `<id>.voice` npz per voice (record and one prompt), written atomically.

    Writes go to a temporary file that is fsynced and renamed over the old one, and the
    directory is fsynced, so a crash leaves either the old voice or the new one."""

    shared = False

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.glob(".tmp-*"):
            leftover.unlink(missing_ok=True)  # a write that a crash interrupted

    def __str__(self) -> str:
        return str(self.dir)

    def snapshot(self) -> tuple[int, dict[str, int]]:
        versions = {p.stem: p.stat().st_mtime_ns for p in sorted(self.dir.glob("[!.]*.voice"))}
        return max(versions.values(), default=0), versions

    def read(self, voice_id: str, model_key: bytes) -> Stored:
        path = self.dir / f"{voice_id}.voice"
        arrays = _unnpz(path.read_bytes())
        prompt = arrays.pop("prompt", None)
        return Stored(arrays, path.stat().st_mtime_ns, None if prompt is None else prompt.tobytes())

    def write(self, voice_id: str, record: Record, model_key: bytes, prompt: bytes, overwrite: bool) -> int:
        # (The library checks `overwrite` against its own voices: only it writes this folder.)
        self._write_file(voice_id, {**record, "prompt": np.frombuffer(prompt, dtype=np.uint8)})
        return (self.dir / f"{voice_id}.voice").stat().st_mtime_ns

    def add_prompt(self, voice_id: str, version: int, model_key: bytes, prompt: bytes) -> None:
        record = self.read(voice_id, model_key).record
        self._write_file(voice_id, {**record, "prompt": np.frombuffer(prompt, dtype=np.uint8)})

    def delete(self, voice_id: str) -> bool:
        path = self.dir / f"{voice_id}.voice"
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def _write_file(self, voice_id: str, arrays: Record) -> None:
        final = self.dir / f"{voice_id}.voice"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_npz(arrays))
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


# Redis layout, under a prefix:
#   seq              the version counter
#   versions         hash: voice id -> version
#   voice:<id>       hash: version, record (npz bytes)
#   prompts:<id>     hash: version, and sha1(model key) -> prompt bytes
# Each change is one Lua script, which Redis runs atomically: a reader never sees a
# version whose record is not there, nor a prompt of an older record.
_WRITE = """
if ARGV[2] == '0' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
local v = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[3], 'version', v, 'record', ARGV[3])
redis.call('HSET', KEYS[4], 'version', v, ARGV[4], ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], v)
return v
"""
_ADD_PROMPT = """
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""
_DELETE = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
if n == 1 then redis.call('INCR', KEYS[4]) end
return n
"""
_SNAPSHOT = "return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2])}"


class RedisStore:
    """Voices in Redis (or a protocol-compatible server such as Valkey), shared by replicas.

    `url` is a redis:// or rediss:// URL; keys go under `prefix`. Every call raises
    `StoreUnavailable` when the server cannot be reached within `timeout_s`."""

    shared = True

    def __init__(self, url: str, prefix: str = "npc-voice:", timeout_s: float = 2.0):
        import redis  # the `cluster` extra; only a shared store needs it

        self.url, self.prefix = url, prefix
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=10
        )
        self._write = self.client.register_script(_WRITE)
        self._add_prompt = self.client.register_script(_ADD_PROMPT)
        self._delete = self.client.register_script(_DELETE)
        self._snapshot = self.client.register_script(_SNAPSHOT)

    def __str__(self) -> str:
        return self.url

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @staticmethod
    def _field(model_key: bytes) -> str:
        return hashlib.sha1(model_key).hexdigest()

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise StoreUnavailable(f"the voice store at {self.url} is unreachable ({exc})") from exc

    def snapshot(self) -> tuple[int, dict[str, int]]:
        seq, flat = self._call(self._snapshot, keys=[self._key("seq"), self._key("versions")])
        versions = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return int(seq), versions

    def read(self, voice_id: str, model_key: bytes) -> Stored:
        pipe = self.client.pipeline(transaction=True)  # MULTI: record and prompts of one moment
        pipe.hmget(self._key("voice", voice_id), "version", "record")
        pipe.hmget(self._key("prompts", voice_id), "version", self._field(model_key))
        (version, record), (prompt_version, prompt) = self._call(pipe.execute)
        if record is None:
            raise KeyError(f"voice {voice_id!r} is not in the store")
        return Stored(_unnpz(record), int(version), prompt if prompt_version == version else None)

    def write(self, voice_id: str, record: Record, model_key: bytes, prompt: bytes, overwrite: bool) -> int:
        keys = [self._key("versions"), self._key("seq"), self._key("voice", voice_id), self._key("prompts", voice_id)]
        args = [voice_id, int(overwrite), _npz(record), self._field(model_key), prompt]
        version = int(self._call(self._write, keys=keys, args=args))
        if version < 0:
            raise VoiceExists(f"voice {voice_id!r} already exists; set overwrite to replace it")
        return version

    def add_prompt(self, voice_id: str, version: int, model_key: bytes, prompt: bytes) -> None:
        keys = [self._key("prompts", voice_id)]
        self._call(self._add_prompt, keys=keys, args=[version, self._field(model_key), prompt])

    def delete(self, voice_id: str) -> bool:
        keys = [self._key("versions"), self._key("voice", voice_id), self._key("prompts", voice_id), self._key("seq")]
        return bool(self._call(self._delete, keys=keys, args=[voice_id]))


def open_store(where: str | Path) -> FolderStore | RedisStore:
    """A redis:// or rediss:// URL opens the shared store; anything else is a folder."""
    text = str(where)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(text)
    return FolderStore(text)
