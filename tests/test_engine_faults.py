"""A bug on the engine's or the audio worker's thread fails the streams it touched, with an
error naming the request, and nothing else: other streams finish, later streams run, the
threads live on and every KV block comes back. Faults are injected with Engine.inject_fault."""

from __future__ import annotations

import pytest

from engine.config import SamplingParams
from engine.runtime.engine import Engine
from engine.runtime.outputs import AudioChunk, EngineError, Finished, FinishReason
from tests.support import make_engine, paused, wait_idle

TEXT = "Over here! The bridge is out, take the ford."


def long(seed: int) -> SamplingParams:
    # Longer than max_buffered_frames (100): an unread stream pauses part-way, still in the engine.
    return SamplingParams(seed=seed, max_frames=160, ignore_eos=True)


def finish(stream) -> Finished:
    for event in stream:
        if isinstance(event, Finished):
            return event
    raise AssertionError("no Finished event")


@pytest.fixture
def eng(model_dir):
    with make_engine(model_dir, max_running=1) as engine:
        yield engine


def assert_healthy(engine: Engine, voice, free_blocks: int) -> None:
    later = finish(engine.submit(voice, TEXT, long(9)))
    assert later.reason == FinishReason.LENGTH and later.frames == 160
    assert engine._thread.is_alive()
    assert wait_idle(engine).free_blocks == free_blocks


def test_a_failing_forward_pass_fails_its_batch_and_nothing_else(eng, voice):
    free = eng.stats().free_blocks
    a = eng.submit(voice, TEXT, long(1))
    paused(eng, a)  # parked: its reader lags, so it is in no step
    eng.inject_fault("step")
    b = eng.submit(voice, TEXT, long(2))  # its prefill is the next forward pass: it raises
    done_b = finish(b)
    assert done_b.reason == FinishReason.ERROR
    assert f"engine request {b.seq.seq_id}" in done_b.error and "InjectedFault" in done_b.error
    assert finish(a).reason == FinishReason.LENGTH
    assert_healthy(eng, voice, free)


def test_a_failing_scheduling_pass_fails_the_streams_it_held_and_later_ones_run(eng, voice):
    free = eng.stats().free_blocks
    a = eng.submit(voice, TEXT, long(1))
    paused(eng, a)
    eng.inject_fault("schedule")
    assert finish(a).reason == FinishReason.ERROR
    assert_healthy(eng, voice, free)


def test_a_failing_command_tells_its_caller_and_spares_running_streams(eng, voice):
    free = eng.stats().free_blocks
    a = eng.submit(voice, TEXT, long(1))
    paused(eng, a)
    eng.inject_fault("command")
    b = eng.submit(voice, TEXT, long(2))  # its admission is the command that raises
    done_b = finish(b)
    assert done_b.reason == FinishReason.ERROR and f"engine request {b.seq.seq_id}" in done_b.error
    assert finish(a).reason == FinishReason.LENGTH
    eng.inject_fault("command")
    with pytest.raises(EngineError, match="InjectedFault"):  # a caller waiting on a command hears of it
        eng.warm_voice(voice, timeout=10)
    assert_healthy(eng, voice, free)


def test_a_failing_audio_batch_fails_its_stream_and_the_audio_thread_goes_on(eng, voice):
    free = eng.stats().free_blocks
    eng.inject_fault("audio")
    events = list(eng.submit(voice, TEXT, long(1)))
    done = events[-1]
    assert done.reason == FinishReason.ERROR and "audio decoding" in done.error
    assert eng.audio._thread.is_alive()
    after = list(eng.submit(voice, TEXT, long(2)))
    assert after[-1].reason == FinishReason.LENGTH and sum(isinstance(e, AudioChunk) for e in after) > 1
    assert_healthy(eng, voice, free)


def test_a_warm_up_whose_prefill_fails_tells_its_caller(model_dir, voice):
    engine = make_engine(model_dir)
    engine.inject_fault("step")  # the warm-up's prefill fails: its caller gets the error
    with pytest.raises(EngineError, match="warming voice"):
        engine.warm_voice(voice, timeout=10)
    engine.close()
    with pytest.raises(ValueError, match="fault point"):
        engine.inject_fault("nowhere")
