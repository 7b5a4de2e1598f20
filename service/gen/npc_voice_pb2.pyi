from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    PCM16: _ClassVar[AudioEncoding]
    FLOAT32: _ClassVar[AudioEncoding]

class TimingKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIMING_KIND_UNSPECIFIED: _ClassVar[TimingKind]
    WORD: _ClassVar[TimingKind]
    PHONEME: _ClassVar[TimingKind]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    END_OF_SPEECH: _ClassVar[FinishReason]
    LENGTH_LIMIT: _ClassVar[FinishReason]
    CANCELLED: _ClassVar[FinishReason]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
PCM16: AudioEncoding
FLOAT32: AudioEncoding
TIMING_KIND_UNSPECIFIED: TimingKind
WORD: TimingKind
PHONEME: TimingKind
FINISH_REASON_UNSPECIFIED: FinishReason
END_OF_SPEECH: FinishReason
LENGTH_LIMIT: FinishReason
CANCELLED: FinishReason

class AudioFormat(_message.Message):
    __slots__ = ("sample_rate_hz", "encoding", "channels")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    encoding: AudioEncoding
    channels: int
    def __init__(self, sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., channels: _Optional[int] = ...) -> None: ...

class SamplingConfig(_message.Message):
    __slots__ = ("temperature", "top_k", "top_p", "repetition_penalty", "seed", "voice_guidance")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VOICE_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    seed: int
    voice_guidance: float
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., seed: _Optional[int] = ..., voice_guidance: _Optional[float] = ...) -> None: ...

class SessionConfig(_message.Message):
    __slots__ = ("voice_id", "sample_rate_hz", "encoding", "chunk_ms", "sampling", "language", "chunk_length_schedule")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_LENGTH_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    sample_rate_hz: int
    encoding: AudioEncoding
    chunk_ms: int
    sampling: SamplingConfig
    language: str
    chunk_length_schedule: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, voice_id: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., chunk_ms: _Optional[int] = ..., sampling: _Optional[_Union[SamplingConfig, _Mapping]] = ..., language: _Optional[str] = ..., chunk_length_schedule: _Optional[_Iterable[int]] = ...) -> None: ...

class TextFragment(_message.Message):
    __slots__ = ("text", "turn_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    turn_id: str
    def __init__(self, text: _Optional[str] = ..., turn_id: _Optional[str] = ...) -> None: ...

class Flush(_message.Message):
    __slots__ = ("turn_id",)
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    def __init__(self, turn_id: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("turn_id",)
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    def __init__(self, turn_id: _Optional[str] = ...) -> None: ...

class Close(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("config", "text", "flush", "cancel", "close")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    text: TextFragment
    flush: Flush
    cancel: Cancel
    close: Close
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., text: _Optional[_Union[TextFragment, _Mapping]] = ..., flush: _Optional[_Union[Flush, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., close: _Optional[_Union[Close, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "format", "chunk_ms", "voice_cached", "timings_available", "model")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    VOICE_CACHED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    format: AudioFormat
    chunk_ms: int
    voice_cached: bool
    timings_available: bool
    model: str
    def __init__(self, session_id: _Optional[str] = ..., format: _Optional[_Union[AudioFormat, _Mapping]] = ..., chunk_ms: _Optional[int] = ..., voice_cached: _Optional[bool] = ..., timings_available: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("audio", "turn_id", "utterance_id", "sample_offset", "last_chunk")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    turn_id: str
    utterance_id: int
    sample_offset: int
    last_chunk: bool
    def __init__(self, audio: _Optional[bytes] = ..., turn_id: _Optional[str] = ..., utterance_id: _Optional[int] = ..., sample_offset: _Optional[int] = ..., last_chunk: _Optional[bool] = ...) -> None: ...

class TimingMark(_message.Message):
    __slots__ = ("turn_id", "utterance_id", "kind", "text", "start_ms", "end_ms", "char_start", "char_end")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    utterance_id: int
    kind: TimingKind
    text: str
    start_ms: int
    end_ms: int
    char_start: int
    char_end: int
    def __init__(self, turn_id: _Optional[str] = ..., utterance_id: _Optional[int] = ..., kind: _Optional[_Union[TimingKind, str]] = ..., text: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ...) -> None: ...

class UtteranceStarted(_message.Message):
    __slots__ = ("turn_id", "utterance_id", "text", "source_text")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TEXT_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    utterance_id: int
    text: str
    source_text: str
    def __init__(self, turn_id: _Optional[str] = ..., utterance_id: _Optional[int] = ..., text: _Optional[str] = ..., source_text: _Optional[str] = ...) -> None: ...

class UtteranceDone(_message.Message):
    __slots__ = ("turn_id", "utterance_id", "text", "audio_seconds", "ttfa_ms", "real_time_factor", "reason", "voice_cached")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TTFA_MS_FIELD_NUMBER: _ClassVar[int]
    REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VOICE_CACHED_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    utterance_id: int
    text: str
    audio_seconds: float
    ttfa_ms: float
    real_time_factor: float
    reason: FinishReason
    voice_cached: bool
    def __init__(self, turn_id: _Optional[str] = ..., utterance_id: _Optional[int] = ..., text: _Optional[str] = ..., audio_seconds: _Optional[float] = ..., ttfa_ms: _Optional[float] = ..., real_time_factor: _Optional[float] = ..., reason: _Optional[_Union[FinishReason, str]] = ..., voice_cached: _Optional[bool] = ...) -> None: ...

class FlushDone(_message.Message):
    __slots__ = ("turn_id",)
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    def __init__(self, turn_id: _Optional[str] = ...) -> None: ...

class CancelDone(_message.Message):
    __slots__ = ("turn_id",)
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    def __init__(self, turn_id: _Optional[str] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("started", "audio", "mark", "utterance_started", "utterance_done", "flush_done", "cancel_done")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_STARTED_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_DONE_FIELD_NUMBER: _ClassVar[int]
    FLUSH_DONE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_DONE_FIELD_NUMBER: _ClassVar[int]
    started: SessionStarted
    audio: AudioChunk
    mark: TimingMark
    utterance_started: UtteranceStarted
    utterance_done: UtteranceDone
    flush_done: FlushDone
    cancel_done: CancelDone
    def __init__(self, started: _Optional[_Union[SessionStarted, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., mark: _Optional[_Union[TimingMark, _Mapping]] = ..., utterance_started: _Optional[_Union[UtteranceStarted, _Mapping]] = ..., utterance_done: _Optional[_Union[UtteranceDone, _Mapping]] = ..., flush_done: _Optional[_Union[FlushDone, _Mapping]] = ..., cancel_done: _Optional[_Union[CancelDone, _Mapping]] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("voice_id", "text", "sample_rate_hz", "encoding", "chunk_ms", "sampling", "language")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    text: str
    sample_rate_hz: int
    encoding: AudioEncoding
    chunk_ms: int
    sampling: SamplingConfig
    language: str
    def __init__(self, voice_id: _Optional[str] = ..., text: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., chunk_ms: _Optional[int] = ..., sampling: _Optional[_Union[SamplingConfig, _Mapping]] = ..., language: _Optional[str] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("started", "audio", "mark", "utterance_started", "utterance_done")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_STARTED_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_DONE_FIELD_NUMBER: _ClassVar[int]
    started: SessionStarted
    audio: AudioChunk
    mark: TimingMark
    utterance_started: UtteranceStarted
    utterance_done: UtteranceDone
    def __init__(self, started: _Optional[_Union[SessionStarted, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., mark: _Optional[_Union[TimingMark, _Mapping]] = ..., utterance_started: _Optional[_Union[UtteranceStarted, _Mapping]] = ..., utterance_done: _Optional[_Union[UtteranceDone, _Mapping]] = ...) -> None: ...

class RegisterVoiceRequest(_message.Message):
    __slots__ = ("voice_id", "display_name", "reference_wav", "transcript", "language", "overwrite")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_WAV_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    display_name: str
    reference_wav: bytes
    transcript: str
    language: str
    overwrite: bool
    def __init__(self, voice_id: _Optional[str] = ..., display_name: _Optional[str] = ..., reference_wav: _Optional[bytes] = ..., transcript: _Optional[str] = ..., language: _Optional[str] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class Voice(_message.Message):
    __slots__ = ("voice_id", "display_name", "transcript", "reference_seconds", "prompt_frames", "cached", "created_at", "demo")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    display_name: str
    transcript: str
    reference_seconds: float
    prompt_frames: int
    cached: bool
    created_at: str
    demo: bool
    def __init__(self, voice_id: _Optional[str] = ..., display_name: _Optional[str] = ..., transcript: _Optional[str] = ..., reference_seconds: _Optional[float] = ..., prompt_frames: _Optional[int] = ..., cached: _Optional[bool] = ..., created_at: _Optional[str] = ..., demo: _Optional[bool] = ...) -> None: ...

class GetVoiceRequest(_message.Message):
    __slots__ = ("voice_id",)
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    def __init__(self, voice_id: _Optional[str] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BrokenVoice(_message.Message):
    __slots__ = ("voice_id", "error")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    error: str
    def __init__(self, voice_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices", "broken")
    VOICES_FIELD_NUMBER: _ClassVar[int]
    BROKEN_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    broken: _containers.RepeatedCompositeFieldContainer[BrokenVoice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ..., broken: _Optional[_Iterable[_Union[BrokenVoice, _Mapping]]] = ...) -> None: ...

class DeleteVoiceRequest(_message.Message):
    __slots__ = ("voice_id",)
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    def __init__(self, voice_id: _Optional[str] = ...) -> None: ...

class DeleteVoiceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WarmVoiceRequest(_message.Message):
    __slots__ = ("voice_id",)
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    def __init__(self, voice_id: _Optional[str] = ...) -> None: ...

class WarmVoiceResponse(_message.Message):
    __slots__ = ("was_cached", "elapsed_ms")
    WAS_CACHED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    was_cached: bool
    elapsed_ms: float
    def __init__(self, was_cached: _Optional[bool] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("model", "timings_available", "phoneme_overrides", "native_sample_rate_hz", "min_sample_rate_hz", "max_sample_rate_hz", "languages", "max_text_chars", "min_reference_seconds", "max_reference_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PHONEME_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MIN_REFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_REFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    timings_available: bool
    phoneme_overrides: bool
    native_sample_rate_hz: int
    min_sample_rate_hz: int
    max_sample_rate_hz: int
    languages: _containers.RepeatedScalarFieldContainer[str]
    max_text_chars: int
    min_reference_seconds: float
    max_reference_seconds: float
    def __init__(self, model: _Optional[str] = ..., timings_available: _Optional[bool] = ..., phoneme_overrides: _Optional[bool] = ..., native_sample_rate_hz: _Optional[int] = ..., min_sample_rate_hz: _Optional[int] = ..., max_sample_rate_hz: _Optional[int] = ..., languages: _Optional[_Iterable[str]] = ..., max_text_chars: _Optional[int] = ..., min_reference_seconds: _Optional[float] = ..., max_reference_seconds: _Optional[float] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("open_streams", "running", "waiting", "kv_blocks_total", "kv_blocks_free", "prefix_hits", "prefix_misses", "prefix_evictions", "prefill_frames", "cached_frames", "decode_frames", "preemptions", "pinned_voices", "prefix_cache_enabled", "max_batch", "event_loop_tasks", "session_limit")
    OPEN_STREAMS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_FREE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_HITS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_MISSES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CACHED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    DECODE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    PINNED_VOICES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_CACHE_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOOP_TASKS_FIELD_NUMBER: _ClassVar[int]
    SESSION_LIMIT_FIELD_NUMBER: _ClassVar[int]
    open_streams: int
    running: int
    waiting: int
    kv_blocks_total: int
    kv_blocks_free: int
    prefix_hits: int
    prefix_misses: int
    prefix_evictions: int
    prefill_frames: int
    cached_frames: int
    decode_frames: int
    preemptions: int
    pinned_voices: int
    prefix_cache_enabled: bool
    max_batch: int
    event_loop_tasks: int
    session_limit: int
    def __init__(self, open_streams: _Optional[int] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., kv_blocks_total: _Optional[int] = ..., kv_blocks_free: _Optional[int] = ..., prefix_hits: _Optional[int] = ..., prefix_misses: _Optional[int] = ..., prefix_evictions: _Optional[int] = ..., prefill_frames: _Optional[int] = ..., cached_frames: _Optional[int] = ..., decode_frames: _Optional[int] = ..., preemptions: _Optional[int] = ..., pinned_voices: _Optional[int] = ..., prefix_cache_enabled: _Optional[bool] = ..., max_batch: _Optional[int] = ..., event_loop_tasks: _Optional[int] = ..., session_limit: _Optional[int] = ...) -> None: ...
