"""Every failure a client can see, mapped to its gRPC status in one table.

Handlers raise `StreamError` for what they check themselves, and let the engine's and
the voice library's exceptions through; `to_stream_error` turns any of them into the
status the client gets. A retry hint travels as `google.rpc.RetryInfo` in the status
details (grpc_status packs them) and as `retry-after-ms` trailing metadata.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from engine import EngineOverloaded, FinishReason
from engine.runtime.outputs import EngineClosed
from service.voice_store import StoreUnavailable
from service.voices import RegistrationsBusy, VoiceCorrupt, VoiceExists, VoiceNotFound


class StreamError(Exception):
    """Ends the stream with a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


# Checked in order: the first class an exception is an instance of names its status.
# ValueError last: the engine and the voice library raise it for a request that is wrong.
_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (EngineOverloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RegistrationsBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineClosed, grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (VoiceNotFound, grpc.StatusCode.NOT_FOUND),
    (VoiceExists, grpc.StatusCode.ALREADY_EXISTS),
    (VoiceCorrupt, grpc.StatusCode.DATA_LOSS),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
]

# An utterance that ended this way ends its stream with this status.
FINISH_STATUS = {FinishReason.SHUTDOWN: grpc.StatusCode.UNAVAILABLE, FinishReason.ERROR: grpc.StatusCode.INTERNAL}


def to_stream_error(exc: BaseException, context: str = "") -> StreamError:
    """The status a client gets for `exc`; anything not in the table is INTERNAL (a bug)."""
    if isinstance(exc, StreamError):
        return exc
    prefix = f"{context}: " if context else ""
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            # KeyError's str() quotes its message; args[0] is what was said.
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return StreamError(code, prefix + message, getattr(exc, "retry_after_s", None))
    return StreamError(grpc.StatusCode.INTERNAL, f"{prefix}{type(exc).__name__}: {exc}")


async def abort(
    context: grpc.aio.ServicerContext, exc: BaseException, trailers: tuple[tuple[str, str], ...] = ()
) -> None:
    """End the RPC with the status of `exc`, with its retry hint in the details and trailers."""
    err = to_stream_error(exc)
    status = status_pb2.Status(code=err.code.value[0], message=err.message)
    hint: tuple[tuple[str, str], ...] = ()
    if err.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after_s * 1e9))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
        hint = (("retry-after-ms", str(int(err.retry_after_s * 1000))),)
    st = rpc_status.to_status(status)
    await context.abort(st.code, st.details, trailing_metadata=tuple(st.trailing_metadata) + hint + trailers)
