"""Structured logs: one JSON object per line (`serve --log-format json`).

The service logs one `rpc` record per call and one `utterance` record per utterance on
the `npc_voice.access` logger, with their fields under `extra={"fields": {...}}`; every
record carries the call's request id (from the `x-request-id` metadata, or made up and
returned in the trailing metadata). Text is logged by its length only, never its words.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
STARTED: ContextVar[float] = ContextVar("started", default=0.0)  # perf_counter() when the call began
access = logging.getLogger("npc_voice.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **({"request_id": REQUEST_ID.get()} if REQUEST_ID.get() else {}),  # (fields may carry their own)
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
