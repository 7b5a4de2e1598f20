"""What the service is run with (the engine's own settings are engine.config's);
`serve`'s flags take their defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.auth import Keys
from service.tls import ServerTLS


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0 picks a free port (tests)
    # A folder (one machine), or redis://host:port/db shared by replicas (service/voice_store.py).
    voice_store: str = "voices"
    lexicon_path: Path | None = None
    lexicon_check_s: float = 1.0  # how often the dictionary file is checked for edits
    max_sessions: int = 64  # concurrent Converse + Synthesize streams
    # Admission by measured headroom (service/admission.py): a new stream is refused while some
    # listener's audio came within this many ms of running dry in the last `headroom_window_s`.
    # 0: off (by count only).
    min_slack_ms: float = 0.0
    headroom_window_s: float = 2.0
    # Listeners run dry again within `limit_raise_s` of a first thin moment lower the limit on
    # open streams to those then open minus one; each `limit_raise_s` with none run dry raises it
    # by one, up to max_sessions (SessionLimit in service/admission.py). 0: off, the limit is
    # max_sessions.
    limit_raise_s: float = 0.0
    # New streams admitted at once, then per second (a token bucket, service/admission.py): a
    # stream's start costs several times its steady state. 0: off. A start whose token comes
    # within `start_hold_s` waits for it (before SessionStarted) instead of being refused.
    starts_per_s: float = 0.0
    start_burst: int = 8
    start_hold_s: float = 0.0
    # Before health says SERVING, speak this many utterances at once in a stored voice
    # (engine.runtime.warmup): a fresh engine pays for each new batch size and prompt length
    # on first use, and a crowd on a fresh server ran listeners dry. 0: no warm-up.
    warmup_streams: int = 0
    # Then collect garbage once and exempt everything alive from later collections (gc.freeze,
    # engine/runtime/heap.py), so that a full collection no longer stops every stream for
    # ~0.1 s. For a process that is the server's own (serve), not one that embeds it.
    freeze_heap: bool = False
    # The interpreter's switch interval (sys.setswitchinterval), set for the whole process when the
    # server starts. After another thread takes the interpreter lock, the engine thread (hundreds
    # of small torch ops per step) may wait this long to get it back. 16 users, five seed-matched
    # load-test pairs: 1 underrun in all at 0.5 ms against 14 at Python's 5 ms (docs/benchmarks.md).
    switch_interval_ms: float = 0.5
    max_text_chars: int = 4000  # per text fragment and per Synthesize request
    max_pending_registrations: int = 4  # RegisterVoice calls waiting or running; more get RESOURCE_EXHAUSTED
    default_chunk_ms: int = 320
    default_sample_rate: int = 48000
    demo_voices: bool = True  # install the demo voices the voices dir lacks
    first_message_timeout_s: float = 30.0  # a Converse stream must send its SessionConfig by then
    tls: ServerTLS | None = None  # None: plaintext
    keys: Keys | None = None  # API keys (service/auth.py); None: no authentication, loopback only
    metrics_port: int | None = None  # serve Prometheus /metrics here (on `host`); None: off, 0: any port

    def __post_init__(self) -> None:
        # sys.setswitchinterval would refuse it too, but only once the model has loaded.
        if not self.switch_interval_ms > 0:
            raise ValueError(
                f"switch_interval_ms (serve --switch-interval-ms) must be above 0, got {self.switch_interval_ms:g}"
            )
        if not self.limit_raise_s >= 0:
            raise ValueError(f"limit_raise_s (serve --limit-raise-s) must be 0 or more, got {self.limit_raise_s:g}")
        if not self.start_hold_s >= 0:
            raise ValueError(f"start_hold_s (serve --start-hold-s) must be 0 or more, got {self.start_hold_s:g}")
        if self.warmup_streams < 0:
            raise ValueError(f"warmup_streams (serve --warmup-streams) must be 0 or more, got {self.warmup_streams}")
