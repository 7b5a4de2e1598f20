"""API keys: who may call what, and whose voices they see.

Clients send `authorization: Bearer <token>`. Keys are kept as SHA-256 hashes, in a JSON
file (`serve --keys FILE`, re-read when it changes; a broken edit keeps the last good
keys) or in the NPC_VOICE_KEYS environment variable (the same JSON):

    {"keys": [{"name": "game-a", "sha256": "<hex>", "roles": ["speak"], "tenant": "game-a"}]}

`python -m service keys add FILE NAME --roles speak,voices [--tenant T]` makes a token,
prints it once and stores its hash. Roles:
- speak: Converse, Synthesize, GetVoice, ListVoices, WarmVoice;
- voices: RegisterVoice, DeleteVoice;
- admin: GetStats.
Any valid key may call GetCapabilities; health and reflection need no key. A key with a
tenant works in that tenant's voices (and sees the shared ones, such as the demo voices,
read-only); another tenant's voices do not exist for it. Wrong or missing credentials get
UNAUTHENTICATED, a missing role PERMISSION_DENIED, both before any voice is looked up, so
neither reveals whether a voice exists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import grpc

from service.errors import StreamError
from service.watched_file import WatchedFile

log = logging.getLogger(__name__)
ROLES = {
    "speak": {"Converse", "Synthesize", "GetVoice", "ListVoices", "WarmVoice"},
    "voices": {"RegisterVoice", "DeleteVoice"},
    "admin": {"GetStats"},
}
ANY_KEY = {"GetCapabilities"}
TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
TENANT: ContextVar[str] = ContextVar("tenant", default="")  # the calling key's tenant; "" = shared voices


@dataclass(frozen=True)
class Key:
    name: str
    sha256: str
    roles: frozenset[str]
    tenant: str = ""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_keys(text: str) -> dict[str, Key]:
    """Keys by hash from the JSON document; ValueError saying what is wrong."""
    doc = json.loads(text)
    out = {}
    for i, k in enumerate(doc.get("keys", [])):
        roles = frozenset(k.get("roles", []))
        if not roles or roles - set(ROLES):
            raise ValueError(f"key {i} ({k.get('name')!r}): roles must be some of {sorted(ROLES)}, got {sorted(roles)}")
        digest = str(k.get("sha256", "")).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"key {i} ({k.get('name')!r}): sha256 must be 64 hex digits")
        tenant = k.get("tenant") or ""
        if tenant and not TENANT_ID.fullmatch(tenant):
            raise ValueError(f"key {i}: tenant {tenant!r} must match {TENANT_ID.pattern}")
        out[digest] = Key(str(k.get("name", f"key-{i}")), digest, roles, tenant)
    return out


class Keys:
    """The server's keys, from a file (re-read when it changes) or a JSON string."""

    def __init__(self, path: str | Path | None = None, text: str | None = None, check_every_s: float = 1.0):
        if (path is None) == (text is None):
            raise ValueError("give a keys file or the keys JSON, not both")
        self.path = Path(path) if path else None
        self._file = WatchedFile(self.path, check_every_s) if self.path else None
        self._keys = parse_keys(text if text is not None else self._file.poll())

    @classmethod
    def from_env(cls) -> Keys | None:
        text = os.environ.get("NPC_VOICE_KEYS")
        return cls(text=text) if text else None

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            text = self._file.poll()
            if text is not None:
                self._keys = parse_keys(text)
                log.info("keys reloaded from %s: %d keys", self.path, len(self._keys))
        except (OSError, ValueError) as exc:  # keep serving with the last good keys
            log.error("keys file %s is unreadable (%s); keeping the previous keys", self.path, exc)

    def check(self, method: str, metadata) -> Key:
        """The key a call carries, if it may call `method`; else the status to end it with."""
        self._reload()
        header = dict(metadata or ()).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise StreamError(grpc.StatusCode.UNAUTHENTICATED, "send 'authorization: Bearer <API key>'")
        digest = hash_token(token.strip())
        key = next((k for h, k in self._keys.items() if hmac.compare_digest(h, digest)), None)
        if key is None:
            raise StreamError(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
        if method not in ANY_KEY and not any(method in ROLES[r] for r in key.roles):
            roles = ", ".join(sorted(key.roles))
            raise StreamError(grpc.StatusCode.PERMISSION_DENIED, f"key {key.name!r} ({roles}) may not call {method}")
        return key


def add_key(path: str | Path, name: str, roles: list[str], tenant: str = "") -> str:
    """Append a new key to the keys file (made if missing); returns its token, shown once."""
    path = Path(path)
    doc = json.loads(path.read_text()) if path.exists() else {"keys": []}
    token = "npv_" + secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": hash_token(token), "roles": roles}
    doc["keys"].append({**entry, "tenant": tenant} if tenant else entry)
    parse_keys(json.dumps(doc))  # refuse to write a file the server would refuse
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token
