"""The engine end to end, on a real checkpoint, in its own thread."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine.audio import speechlike_wave
from engine.config import CacheConfig, EngineConfig, SamplingParams, StreamConfig
from engine.models.speech_lm.toy import make_toy_model
from engine.runtime.engine import Engine
from engine.runtime.outputs import (
    AudioChunk,
    EngineClosed,
    EngineOverloaded,
    Finished,
    FinishReason,
    FrameEvent,
    TimingMark,
)
from tests.support import TINY, concurrently, make_engine, speech_like, wait_idle

TEXT = "Over here! The bridge is out, take the ford."


def fixed(seed: int, frames: int = 24, **kw) -> SamplingParams:
    return SamplingParams(seed=seed, max_frames=frames, ignore_eos=True, temperature=1.0, top_k=50, **kw)


def run_all(streams) -> list[torch.Tensor]:
    """Read every stream from its own thread, as concurrent clients would."""
    return concurrently(lambda i: streams[i].wait_frames(), len(streams))


def test_same_seed_same_frames_with_prefix_miss_hit_alone_and_batched(model_dir, voice):
    params = fixed(seed=1234, repetition_penalty=1.3)
    with make_engine(model_dir) as cold:
        miss = cold.submit(voice, TEXT, params).wait_frames()
        assert cold.stats().cached_frames == 0
    with make_engine(model_dir) as eng:
        assert eng.warm_voice(voice) is False
        hit_stream = eng.submit(voice, TEXT, params)
        hit = hit_stream.wait_frames()
        assert hit_stream.cached_frames == voice.num_frames
        others = [eng.submit(voice, f"Line number {i}, spoken at once.", fixed(seed=i)) for i in range(15)]
        target = eng.submit(voice, TEXT, params)
        frames = run_all(others + [target])
        assert eng.stats().decode_frames > 0
    assert len(miss) == 24
    assert torch.equal(miss, hit)
    assert torch.equal(miss, frames[-1])
    assert not torch.equal(frames[0], frames[1])  # different seeds really differ


def test_second_utterance_prefills_only_its_new_text(engine, voice):
    first = engine.submit(voice, "First line.", fixed(seed=1, frames=4))
    first.wait_frames()
    s1 = engine.stats()
    assert s1.prefill_frames >= voice.num_frames and s1.cached_frames == 0
    text = "A second, different line."
    second = engine.submit(voice, text, fixed(seed=2, frames=4))
    second.wait_frames()
    s2 = engine.stats()
    new_frames = len(engine.tokenizer.encode(text)) + 1  # text plus the speech-start marker
    assert s2.cached_frames - s1.cached_frames == voice.num_frames
    assert s2.prefill_frames - s1.prefill_frames == new_frames
    assert second.cached_frames == voice.num_frames
    assert s2.prefix_hits > s1.prefix_hits


def test_cancel_stops_at_the_next_step_and_returns_blocks(engine, voice):
    start_free = engine.stats().free_blocks
    stream = engine.submit(voice, TEXT, fixed(seed=5, frames=400))
    events = iter(stream)
    first = next(events)
    assert isinstance(first, AudioChunk)
    stream.cancel()
    rest = list(events)
    assert rest == [] or (len(rest) == 1 and isinstance(rest[0], Finished))
    s = wait_idle(engine)
    assert stream.seq.num_generated < 400
    frozen = stream.seq.num_generated
    time.sleep(0.2)
    assert stream.seq.num_generated == frozen  # nothing generated after the cancel landed
    assert s.free_blocks == start_free


def test_pool_returns_to_its_start_after_200_utterances_and_50_cancels(engine, voice):
    start_free = engine.stats().free_blocks
    for i in range(200):
        frames = engine.submit(voice, f"Utterance {i}.", fixed(seed=i, frames=3)).wait_frames()
        assert len(frames) == 3
    for i in range(50):
        stream = engine.submit(voice, f"Cancelled {i}, a longer line that would run on.", fixed(seed=i, frames=300))
        for event in stream.events():
            if isinstance(event, FrameEvent):
                break
        stream.cancel()
    s = wait_idle(engine)
    assert s.free_blocks == start_free == s.num_blocks
    assert s.prefix_hits >= 249  # every utterance after the first reused the voice


def test_memory_pressure_preempts_and_every_stream_still_matches(model_dir, voice):
    prompts = [(f"Pressure line {i}.", fixed(seed=100 + i, frames=40)) for i in range(8)]
    with make_engine(model_dir, num_blocks=512) as roomy:
        expected = run_all([roomy.submit(voice, t, p) for t, p in prompts])
        assert roomy.stats().preemptions == 0
    # 8 streams each needing ~8 blocks at the end, in a pool of 24.
    with make_engine(model_dir, num_blocks=24) as tight:
        got = run_all([tight.submit(voice, t, p) for t, p in prompts])
        s = wait_idle(tight)
        assert s.preemptions > 0
        assert s.free_blocks == 24
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def test_a_slow_reader_pauses_only_its_own_stream(model_dir, voice):
    with make_engine(model_dir, max_buffered_frames=6) as eng:
        slow = eng.submit(voice, TEXT, fixed(seed=1, frames=200))
        fast = eng.submit(voice, TEXT, fixed(seed=2, frames=60))
        assert len(fast.wait_frames()) == 60
        assert slow.seq.num_generated <= 6 + 1  # paused at its buffer limit
        assert len(slow.wait_frames()) == 200  # and resumes when read


def test_consumer_that_walks_away_frees_its_work(engine, voice):
    start_free = engine.stats().free_blocks
    stream = engine.submit(voice, TEXT, fixed(seed=3, frames=500))
    for event in stream:
        if isinstance(event, AudioChunk):
            break  # the iterator is dropped and closed here, as when a client disconnects
    s = wait_idle(engine)
    assert s.free_blocks == start_free
    assert stream.seq.num_generated < 500


def test_audio_chunks_add_up_at_the_requested_rate(engine, voice):
    events = list(engine.submit(voice, TEXT, fixed(seed=9, frames=20), sample_rate=16000))
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    done = events[-1]
    assert isinstance(done, Finished) and done.reason == "length" and done.frames == 20
    offset = 0
    for c in chunks:
        assert c.offset == offset and c.sample_rate == 16000
        offset += len(c.samples)
    assert chunks[-1].is_last and not any(c.is_last for c in chunks[:-1])
    assert offset == 20 * engine.codec.samples_per_frame * 16000 // 24000
    assert abs(done.audio_seconds - 20 / 25) < 1e-6 and done.ttfa_ms > 0
    assert len(chunks[0].pcm16()) == 2 * len(chunks[0].samples)
    assert not any(isinstance(e, TimingMark) for e in events)  # this model has no timings


def test_the_shared_audio_thread_gives_each_stream_what_its_own_decoding_would(model_dir, voice):
    def speak(audio_batch: int) -> tuple[list[torch.Tensor], int]:
        cfg = EngineConfig(
            cache=CacheConfig(block_size=16, num_blocks=512),
            num_threads=2,
            stream=StreamConfig(audio_batch=audio_batch),
        )
        with Engine(model_dir, cfg) as eng:
            streams = [eng.submit(voice, f"Line {i}, at once.", fixed(seed=i, frames=30 + 7 * i)) for i in range(6)]

            def read(i: int) -> torch.Tensor:
                return torch.from_numpy(np.concatenate([e.samples for e in streams[i] if isinstance(e, AudioChunk)]))

            return concurrently(read, len(streams)), (eng.audio.windows if eng.audio else 0)

    shared, windows = speak(16)
    own, none = speak(0)
    assert windows > 6 and none == 0  # the audio thread decoded every stream's windows
    for i, (a, b) in enumerate(zip(shared, own)):
        assert len(a) == (30 + 7 * i) * 960 and torch.equal(a, b), i


def test_eos_or_the_length_guard_ends_every_utterance(engine, voice):
    ids = engine.tokenizer.encode("Yes!")
    gen = engine.model_cfg.generation
    guard = int(len(ids) * gen.max_frames_per_text_token) + gen.min_frames_guard
    for seed in range(6):
        stream = engine.submit(voice, "Yes!", SamplingParams(seed=seed, temperature=1.0))
        frames = stream.wait_frames()
        assert stream.finished.reason in ("eos", "length")
        assert len(frames) <= guard
        assert not (frames[:, 0] == engine.model_cfg.eos).any()


def test_timing_marks_from_a_model_with_an_advance_token(tmp_path, voice):
    model = make_toy_model(tmp_path / "m", seed=1, **TINY, advance=4, mark_delay_frames=2)
    with make_engine(model) as eng:
        params = SamplingParams(seed=0, max_frames=80, ignore_eos=True, temperature=3.0)
        events = list(eng.submit(voice, TEXT, params))
        marks = [e for e in events if isinstance(e, TimingMark)]
        frames = eng.submit(voice, TEXT, params).wait_frames()
        ids = eng.tokenizer.encode(TEXT)
    inserted = (frames[:, 0] != eng.model_cfg.text_pad).nonzero().flatten().tolist()
    # Each advance feeds the next text unit's own id as channel 0, in order, none skipped.
    assert marks and len(marks) == len(inserted) <= len(ids)
    assert frames[inserted, 0].tolist() == ids[: len(marks)]
    assert [m.text_index for m in marks] == list(range(len(marks)))
    assert [m.start_ms for m in marks] == [(i + 2) * 40.0 for i in inserted]  # frame start + delay
    assert [TEXT[m.char_start : m.char_end] for m in marks] == [TEXT[i] for i in range(len(marks))]
    assert [m.unit for m in marks] == [TEXT[i] for i in range(len(marks))]


def test_a_hold_units_model_is_fed_the_unit_it_is_on(tmp_path, voice):
    model = make_toy_model(
        tmp_path / "m",
        seed=1,
        **TINY,
        advance=4,
        mark_delay_frames=2,
        hold_units=True,
    )
    with make_engine(model) as eng:
        cfg = eng.model_cfg
        params = SamplingParams(seed=0, max_frames=80, ignore_eos=True, temperature=3.0)
        frames = eng.submit(voice, TEXT, params).wait_frames()
        ids = eng.tokenizer.encode(TEXT)
    ch0 = frames[:, 0].tolist()
    arrivals = [i for i, v in enumerate(ch0) if v < cfg.text_vocab and v != cfg.text_pad]
    assert len(arrivals) >= 3 and [ch0[i] for i in arrivals] == ids[: len(arrivals)]
    assert all(v == cfg.text_pad for v in ch0[: arrivals[0]])
    for k, start in enumerate(arrivals):  # until the next arrival, every frame holds this unit
        end = arrivals[k + 1] if k + 1 < len(arrivals) else len(ch0)
        assert ch0[start + 1 : end] == [cfg.held(ids[k])] * (end - start - 1)


def test_requests_without_sampling_get_the_models_own(tmp_path, voice):
    greedy = make_toy_model(tmp_path / "g", seed=1, **TINY, temperature=0.0)
    with make_engine(greedy) as eng:
        assert eng.default_sampling(seed=5) == SamplingParams(temperature=0.0, seed=5)
        runs = [eng.submit(voice, TEXT).wait_frames() for _ in range(2)]  # each draws its own seed
        hot = [eng.submit(voice, TEXT, SamplingParams(temperature=1.5, max_frames=30)).wait_frames() for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(hot[0], hot[1])


def test_speech_does_not_end_before_every_unit_is_reached(tmp_path, voice):
    model = make_toy_model(tmp_path / "m", seed=3, **TINY, advance=4)
    with make_engine(model) as eng:
        n = len(eng.tokenizer.encode("Yes!"))
        ended = 0
        for seed in range(12):
            stream = eng.submit(voice, "Yes!", SamplingParams(seed=seed, temperature=2.0))
            frames = stream.wait_frames()
            if stream.finished.reason == "eos":
                ended += 1
                assert (frames[:, 0] != eng.model_cfg.text_pad).sum() == n
    assert ended >= 3  # the check above really ran


@pytest.mark.parametrize("limit", [0, 3])
def test_a_pointer_that_stalls_is_moved_on(tmp_path, voice, limit):
    model = make_toy_model(
        tmp_path / "m",
        seed=3,
        **TINY,
        advance=4,
        max_frames_per_unit=limit,
        min_frames_per_text_token=0.0,
    )
    longest = []
    with make_engine(model) as eng:
        units = len(eng.tokenizer.encode(TEXT))
        for seed in range(4):
            stream = eng.submit(voice, TEXT, SamplingParams(seed=seed, temperature=0.5))
            frames = stream.wait_frames()
            fed = (frames[:, 0] != eng.model_cfg.text_pad).nonzero().flatten().tolist()
            stays = torch.diff(torch.tensor([0] + fed + [len(frames)]))
            longest.append(int(stays.max()))
            if limit:  # every unit within `limit` frames of the last; speech ends `limit` after the last
                assert len(fed) == units and stream.finished.reason == "eos"
    if limit:
        assert max(longest) <= limit
    else:
        assert max(longest) > 3  # without the guard this model does stall (the check above is real)


def test_a_reference_longer_than_the_model_was_trained_on_is_refused(tmp_path):
    model = make_toy_model(tmp_path / "m", seed=0, **TINY, max_reference_frames=100)  # 4 s at 25 frames/s
    with make_engine(model) as eng:
        with pytest.raises(ValueError, match=r"reference is 5\.0 s; this model clones from at most 4 s"):
            eng.make_voice(speechlike_wave(5.0), 24000, "A line.", "long")
        assert eng.make_voice(speechlike_wave(3.9), 24000, "A line.", "short").num_frames > 90


def test_bad_requests_fail_clearly_and_leave_the_engine_serving(engine, voice):
    with pytest.raises(ValueError, match="empty"):
        engine.submit(voice, "   ")
    with pytest.raises(ValueError, match="8000-48000"):
        engine.submit(voice, TEXT, sample_rate=96000)
    with pytest.raises(ValueError, match="top_p"):
        engine.submit(voice, TEXT, SamplingParams(top_p=0))
    with pytest.raises(ValueError, match="max_positions"):
        engine.submit(voice, "x" * 5000)
    assert len(engine.submit(voice, TEXT, fixed(seed=1, frames=5)).wait_frames()) == 5


def test_a_full_queue_is_refused_with_a_retry_hint(model_dir, voice):
    with make_engine(model_dir, max_waiting=2, max_running=1) as eng:
        streams, refused = [], None
        for i in range(20):
            try:
                streams.append(eng.submit(voice, TEXT, fixed(seed=i, frames=50)))
            except EngineOverloaded as exc:
                refused = exc
                break
        assert refused is not None and refused.retry_after_s > 0
        for s in streams:
            s.cancel()


def test_warm_voice_pins_the_prefix(engine, voice):
    assert engine.is_cached(voice) is False
    assert engine.warm_voice(voice) is False
    assert engine.is_cached(voice) and engine.warm_voice(voice) is True
    s = engine.stats()
    assert s.pinned_voices == 1 and s.pinned_blocks == -(-voice.num_frames // 16)
    stream = engine.submit(voice, TEXT, fixed(seed=1, frames=2))
    stream.wait_frames()
    assert stream.cached_frames == voice.num_frames
    engine.unpin_voice(voice)
    s = wait_idle(engine)
    assert s.pinned_blocks == 0 and s.free_blocks == s.num_blocks


def test_voice_prompt_survives_serialisation(engine, voice):
    from engine.runtime.voice import VoicePrompt

    again = VoicePrompt.from_bytes(voice.to_bytes())
    assert torch.equal(again.frames, voice.frames) and again.key == voice.key
    assert again.voice_hash == voice.voice_hash


def test_stereo_reference_at_another_rate_is_accepted(engine):
    wave = speech_like(3.0, sr=44100)
    stereo = torch.stack([wave, wave * 0.5])
    v = engine.make_voice(stereo, 44100, "Hello there.", "stereo")
    assert v.num_frames == 1 + len("Hello there.") + 75


def test_closing_the_engine_ends_every_open_stream(model_dir, voice):
    eng = make_engine(model_dir)
    streams = [eng.submit(voice, TEXT, fixed(seed=i, frames=500)) for i in range(3)]
    deadline = time.time() + 10
    while streams[0].seq.num_generated == 0 and time.time() < deadline:
        time.sleep(0.01)
    eng.close()
    for s in streams:
        s.wait_frames()
        assert s.finished.reason == FinishReason.SHUTDOWN and "closed" in s.finished.error
        assert s.seq.num_generated < 500
    with pytest.raises(EngineClosed, match="shutting down"):
        eng.submit(voice, TEXT)
    # What waits on the engine thread says so instead of waiting forever; a late cancel is a no-op.
    for call in (
        lambda: eng.warm_voice(voice, timeout=5),
        lambda: eng.is_cached(voice),
        lambda: eng.unpin_voice(voice),
    ):
        with pytest.raises(EngineClosed, match="shut down"):
            call()
    streams[0].cancel()


def test_prefix_cache_off_computes_every_prompt_and_gives_the_same_frames(model_dir, voice):
    with make_engine(model_dir) as cached:
        a = [cached.submit(voice, TEXT, fixed(4)).wait_frames() for _ in range(2)]
        hits = cached.stats().prefix_hits
    with make_engine(model_dir, prefix_cache=False) as plain:
        b = [plain.submit(voice, TEXT, fixed(4)).wait_frames() for _ in range(2)]
        stats = plain.stats()
    assert hits > 0 and stats.prefix_hits == 0 and stats.cached_frames == 0
    prompt = voice.num_frames + len(plain.tokenizer.encode(TEXT)) + 1
    assert stats.prefill_frames == 2 * prompt  # both utterances paid the whole prompt
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_end_of_speech_waits_for_the_minimum_length(tmp_path, voice):
    model = make_toy_model(
        tmp_path / "m",
        seed=2,
        **TINY,
        min_frames_per_text_token=2.0,
        max_frames_per_text_token=3.0,
    )
    with make_engine(model) as eng:
        n = len(eng.tokenizer.encode("Yes!"))
        lengths = [
            len(eng.submit(voice, "Yes!", SamplingParams(seed=s, temperature=1.5)).wait_frames()) for s in range(8)
        ]
    assert all(2 * n <= k <= 3 * n + eng.model_cfg.generation.min_frames_guard for k in lengths), lengths


def test_paced_scheduling_steps_only_when_a_stream_runs_low_and_then_takes_all_that_will_soon():
    """SchedulerConfig.pace_lead_s: no decode while every stream has >= pace seconds ahead; once
    one runs low, every stream under twice that rides along, and those further ahead wait."""
    from engine.config import SchedulerConfig
    from engine.runtime.block_manager import BlockManager
    from engine.runtime.scheduler import Scheduler
    from engine.runtime.sequence import Sequence

    blocks = BlockManager(64, 16, lambda src, dst: None, caching=False)
    sched = Scheduler(SchedulerConfig(pace_lead_s=1.0), blocks)
    seqs = [Sequence(torch.zeros(4, 2, dtype=torch.long), 0, b"v", SamplingParams(), 50, i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    first = sched.schedule(lambda s: True)  # admission: prompts prefill whatever the lead
    assert {s.seq_id for s, _, _ in first.prefill} == {s.seq_id for s in seqs}
    for s in seqs:
        s.num_computed = len(s) - 1  # each now decodes one frame per step
    leads = {seqs[0].seq_id: 1.5, seqs[1].seq_id: 2.5, seqs[2].seq_id: 1.2}
    lead = lambda s: leads[s.seq_id]
    assert not sched.schedule(lambda s: True, lead)  # all have >= 1 s ahead: nothing to do
    leads[seqs[2].seq_id] = 0.9  # one runs low
    assert {s.seq_id for s in sched.schedule(lambda s: True, lead).decode} == {seqs[0].seq_id, seqs[2].seq_id}
    unpaced = Scheduler(SchedulerConfig(pace_lead_s=0.0), blocks)
    unpaced.running, leads[seqs[2].seq_id] = list(seqs), 1.2
    assert len(unpaced.schedule(lambda s: True, lead).decode) == 3  # off: every stream, every step
