"""Scheduling by playback deadline: streams whose readers stopped, or that are far ahead of
real-time playback, yield their slots, so a new utterance never waits behind them."""

from __future__ import annotations

import os
import threading
import time

import torch

from engine.config import CacheConfig, EngineConfig, SamplingParams, SchedulerConfig
from engine.runtime.block_manager import BlockManager
from engine.runtime.engine import Engine
from engine.runtime.outputs import Finished, FinishReason
from engine.runtime.scheduler import Scheduler
from engine.runtime.sequence import Sequence, Status
from tests.support import paused, wait_idle

TEXT = "Over here! The bridge is out, take the ford."


def engine_with(model_dir, **sched) -> Engine:
    cfg = EngineConfig(cache=CacheConfig(block_size=16, num_blocks=512), scheduler=SchedulerConfig(**sched))
    return Engine(model_dir, cfg)


def frames(n: int, seed: int) -> SamplingParams:
    return SamplingParams(seed=seed, max_frames=n, ignore_eos=True)


def read_in_background(stream, out: dict, key: str) -> threading.Thread:
    def read():
        for event in stream:
            if isinstance(event, Finished):
                out[key] = (event, time.monotonic())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_streams_whose_readers_stopped_do_not_hold_the_slots(model_dir, voice):
    """Two slots, both taken by streams nobody reads: a third utterance still runs to the end
    (before, it waited for a slot for as long as they went unread)."""
    with engine_with(model_dir, max_running=2) as eng:
        idle = [eng.submit(voice, TEXT, frames(300, seed)) for seed in (1, 2)]
        for stream in idle:
            paused(eng, stream)
        done: dict = {}
        read_in_background(eng.submit(voice, TEXT, frames(60, 3)), done, "new").join(30)
        assert done["new"][0].reason == FinishReason.LENGTH and done["new"][0].frames == 60
        assert eng.stats().running == 2 + 0  # the idle two are still there, parked, not finished
        for stream in idle:
            stream.cancel()
        wait_idle(eng)


def test_a_stream_far_ahead_of_playback_yields_to_a_waiting_one(model_dir, voice):
    """One slot. A long utterance read as fast as it comes runs far ahead of real time; a
    short one submitted then is served at once, earliest deadline first, and ends long before
    the long one (before, it waited for the whole long utterance)."""
    with engine_with(model_dir, max_running=1, max_lead_s=0.5) as eng:
        done: dict = {}
        first = read_in_background(eng.submit(voice, TEXT, frames(400, 1)), done, "long")
        lead = eng._lead_at
        deadline = time.monotonic() + 30
        while not eng.scheduler.running or lead(time.monotonic())(eng.scheduler.running[0]) < 1.0:
            assert time.monotonic() < deadline and "long" not in done, "the long utterance never ran ahead"
            time.sleep(0.005)
        second = read_in_background(eng.submit(voice, TEXT, frames(40, 2)), done, "short")
        first.join(60)
        second.join(60)
        assert done["short"][0].reason == done["long"][0].reason == FinishReason.LENGTH
        assert done["short"][1] < done["long"][1]


def test_with_nothing_waiting_a_stream_runs_ahead_freely(model_dir, voice):
    """One-shot rendering stays fast: alone, an utterance is not held to real time."""
    with engine_with(model_dir, max_running=1, max_lead_s=0.1) as eng:
        start = time.monotonic()
        stream = eng.submit(voice, TEXT, frames(200, 1))
        events = list(stream)
        audio_s = events[-1].audio_seconds
        assert events[-1].reason == FinishReason.LENGTH and time.monotonic() - start < audio_s / 2


def test_fifty_clients_that_never_read_do_not_starve_a_conversation(model_dir, tmp_path):
    """50 Converse streams whose clients never read a response, on an engine with 8 slots, then
    one that does: its audio arrives in real time (each chunk before the audio ahead of it has
    finished playing). Before, the unread streams held every slot and it never started."""
    import grpc

    from service.gen import npc_voice_pb2 as pb
    from tests.support import ServerThread, make_engine

    eng = make_engine(model_dir, max_running=8)  # fewer slots than idle clients
    srv = ServerThread(eng, tmp_path / "voices", max_sessions=64)
    line = "Hold the gate until dawn, and do not open it for anyone who cannot name the king. " * 12
    channels, calls = [], []
    try:

        def talk(text: str, timeout: float | None = None, rate: int = 16000, encoding: int = pb.PCM16):
            channel = grpc.insecure_channel(srv.address)
            channels.append(channel)
            cfg = pb.SessionConfig(voice_id="guard", sample_rate_hz=rate, encoding=encoding)
            msgs = [pb.ConverseRequest(config=cfg), pb.ConverseRequest(text=pb.TextFragment(text=text))]
            close = [pb.ConverseRequest(close=pb.Close())]
            return pb_grpc.NpcVoiceStub(channel).Converse(iter(msgs + close), timeout=timeout)

        from service.gen import npc_voice_pb2_grpc as pb_grpc

        # Never read; long lines at 48 kHz float32 (192 kB/s), so their transports fill and
        # they stall part-way through, each holding its place in the engine.
        calls = [talk(line, rate=48000, encoding=pb.FLOAT32) for _ in range(int(os.environ.get("IDLE", 50)))]
        # Let them fill whatever the transports buffer, until the engine has nothing it may run.
        deadline, last, still = time.monotonic() + 180, -1, 0
        while still < 3:
            time.sleep(1.0)
            now = eng.stats().decode_frames
            still = still + 1 if now == last else 0
            assert time.monotonic() < deadline, "the unread streams never stalled"
            last = now
        arrivals, audio_s = [], 0.0
        for response in talk("Who goes there? Step into the light and show your hands.", timeout=60):
            if response.WhichOneof("kind") == "audio":
                arrivals.append((time.monotonic(), audio_s))
                audio_s += len(response.audio.audio) / 2 / 16000
        start = arrivals[0][0]
        late = [round(t - (start + before), 3) for t, before in arrivals if t > start + before + 0.25]
        assert audio_s > 1.0 and late == [], f"underruns (s late): {late}"
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()
        srv.stop()
        eng.close()


def frames_seq(seed: int) -> Sequence:
    return Sequence(torch.zeros(4, 2, dtype=torch.long), 0, b"v", SamplingParams(), 50, seed)


def test_while_a_stream_runs_short_those_far_ahead_sit_out_and_wait_to_be_admitted():
    """SchedulerConfig.urgent_lead_s: with one stream under 0.5 s of audio ahead, a step takes only
    the streams under 1 s, and a queued utterance whose audio is not due for 3 s waits while a new
    conversation's first (lead -inf) is admitted; with nobody short, everything runs."""
    blocks = BlockManager(64, 16, lambda src, dst: None, caching=False)
    sched = Scheduler(SchedulerConfig(urgent_lead_s=0.5), blocks)
    short, soon, far, later, new = (frames_seq(i) for i in range(5))
    for s in (short, soon, far):
        sched.add(s)
    sched.schedule(lambda s: True)  # admitted and prefilled
    for s in (short, soon, far):
        s.num_computed = len(s) - 1
    leads = {short.seq_id: 0.3, soon.seq_id: 0.8, far.seq_id: 2.5, later.seq_id: 3.0, new.seq_id: float("-inf")}
    lead = lambda s: leads[s.seq_id]  # noqa: E731
    sched.add(later)
    batch = sched.schedule(lambda s: True, lead)
    assert {s.seq_id for s in batch.decode} == {short.seq_id, soon.seq_id} and not batch.prefill
    sched.add(new)
    batch = sched.schedule(lambda s: True, lead)
    assert [s.seq_id for s, _, _ in batch.prefill] == [new.seq_id] and later in sched.waiting
    leads[short.seq_id] = leads[new.seq_id] = 1.2  # nobody short any more: all run, all admitted
    new.num_computed = len(new) - 1
    batch = sched.schedule(lambda s: True, lead)
    assert {s.seq_id for s in batch.decode} == {s.seq_id for s in (short, soon, far, new)}
    assert [s.seq_id for s, _, _ in batch.prefill] == [later.seq_id]
    off = Scheduler(SchedulerConfig(urgent_lead_s=0.0), blocks)
    off.running, leads[short.seq_id] = [short, soon, far], 0.1
    assert len(off.schedule(lambda s: True, lead).decode) == 3  # off: every stream, every step


def test_an_utterance_heard_after_another_is_due_when_that_ones_audio_runs_out():
    """Sequence.lead with `after`: a conversation's next sentence, submitted early, is ahead by the
    audio still to play before it; once that utterance finishes, its end is kept and the link
    dropped; a cut-off one counts for nothing; and past its end, a frameless next one is overdue."""
    rate = 25.0
    first, second = frames_seq(1), frames_seq(2)
    second.after = first
    assert second.lead(100.0, rate) == float("inf")  # nothing of the first yet: not due before it
    first.first_frame_at = 100.0
    for _ in range(50):  # 2 s of audio, playing from 100.0
        first.append(torch.zeros(2, dtype=torch.long))
    assert abs(second.lead(100.5, rate) - 1.5) < 1e-9
    second.first_frame_at = 100.6
    for _ in range(10):  # 0.4 s, heard from 102.0
        second.append(torch.zeros(2, dtype=torch.long))
    assert abs(second.lead(100.7, rate) - 1.7) < 1e-9
    first.status = Status.FINISHED
    assert abs(second.lead(100.7, rate) - 1.7) < 1e-9 and second.after is None and second.plays_from == 102.0
    third = frames_seq(3)
    third.after = second
    assert abs(third.lead(101.0, rate) - 1.4) < 1e-9
    assert third.lead(102.5, rate) == float("-inf")  # the second has played out: a listener waits
    cut = frames_seq(4)
    cut.after = third
    third.cancelled.set()
    assert cut.lead(100.0, rate) == float("-inf") and cut.after is None


def test_a_conversation_schedules_each_sentence_after_the_one_before_it(model_dir, tmp_path):
    """The service tells the engine which utterance each one follows: the first of a conversation
    follows nothing, every later one the sentence before it (submitted ahead while that one plays)."""
    from service.fragments import llm_tokens
    from service.gen import npc_voice_pb2 as pb
    from tests.support import ServerThread, make_engine

    eng = make_engine(model_dir)
    submitted = []
    real_submit = eng.submit

    def recording_submit(voice, text, *args, after=None, **kw):
        stream = real_submit(voice, text, *args, after=after, **kw)
        submitted.append((text, stream, after))
        return stream

    eng.submit = recording_submit
    srv = ServerThread(eng, tmp_path / "voices")
    try:
        line = "Over here! The bridge is out. Take the ford by the mill instead."
        reqs = [pb.ConverseRequest(config=pb.SessionConfig(voice_id="guard", sample_rate_hz=16000))]
        reqs += [pb.ConverseRequest(text=pb.TextFragment(text=t)) for t in llm_tokens(line)]
        responses = list(srv.stub.Converse(iter(reqs + [pb.ConverseRequest(close=pb.Close())]), timeout=120))
        spoken = [r.utterance_started.text for r in responses if r.WhichOneof("kind") == "utterance_started"]
        assert len(spoken) == 3 and [text for text, _, _ in submitted] == spoken
        assert submitted[0][2] is None
        assert all(after is prev for (_, prev, _), (_, _, after) in zip(submitted, submitted[1:]))
    finally:
        srv.stop()
        eng.close()


def test_turn_starts_beyond_max_starting_wait_while_sentences_queued_behind_playing_audio_go():
    """SchedulerConfig.max_starting: two utterances whose listeners wait (lead -inf) start; a third
    waits while both are within start_window_s of their first frame (or before it), even with
    room in the batch, but a conversation's next sentence (finite lead) is admitted past it; once
    one of the two is past the window, the third starts."""
    blocks = BlockManager(64, 16, lambda src, dst: None, caching=False)
    sched = Scheduler(SchedulerConfig(max_starting=2, start_window_s=0.5, urgent_lead_s=0.0), blocks)
    a, b, c, follower = (frames_seq(i) for i in range(4))
    leads = {a.seq_id: float("-inf"), b.seq_id: float("-inf"), c.seq_id: float("-inf"), follower.seq_id: 1.0}
    lead = lambda s: leads[s.seq_id]  # noqa: E731
    for s in (a, b, c, follower):
        sched.add(s)
    batch = sched.schedule(lambda s: True, lead)
    assert [s.seq_id for s, _, _ in batch.prefill] == [a.seq_id, b.seq_id, follower.seq_id]
    assert list(sched.waiting) == [c]
    now = time.monotonic()
    a.first_frame_at, b.first_frame_at = now - 0.1, now - 0.2  # spoke just now: still starting
    assert not any(s is c for s, _, _ in sched.schedule(lambda s: True, lead).prefill)
    # One past the window, one still in it: a slot is free (the follower, running without a
    # frame yet, was never a turn start and does not hold one).
    a.first_frame_at = now - 0.6
    assert [s.seq_id for s, _, _ in sched.schedule(lambda s: True, lead).prefill][-1] == c.seq_id
    off = Scheduler(SchedulerConfig(max_starting=0, urgent_lead_s=0.0), blocks)
    for s in (frames_seq(i) for i in range(10, 15)):
        leads[s.seq_id] = float("-inf")
        off.add(s)
    assert len(off.schedule(lambda s: True, lead).prefill) == 5  # off: every start at once
