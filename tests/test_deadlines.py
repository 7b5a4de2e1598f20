"""Scheduling by playback deadline: streams whose readers stopped, or that are far ahead of
real-time playback, yield their slots, so a new utterance never waits behind them."""

from __future__ import annotations

import os
import threading
import time

from engine.config import CacheConfig, EngineConfig, SamplingParams, SchedulerConfig
from engine.runtime.engine import Engine
from engine.runtime.outputs import Finished, FinishReason
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
