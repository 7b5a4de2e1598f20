"""The voice routing header: clients name the voice of a call in its metadata, so a load
balancer in front of several replicas can send a voice's calls to the replica whose
prefix cache holds it (deploy/haproxy.cfg hashes on it; docs/scaling.md)."""

from __future__ import annotations

VOICE_HEADER = "x-npc-voice"


def voice_route(voice_id: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a call about `voice_id` (Converse, Synthesize, the voice RPCs)."""
    return ((VOICE_HEADER, voice_id),)
