"""A lean load driver: many LLM-paced conversations from one asyncio process.

    python -m loadtest.driver --host 127.0.0.1:50051 --users 16 --seconds 40 --out loadtest/results/lean

Locust (loadtest/locustfile.py) stays the tool for mixed scenarios and its web UI, but each
of its users costs a gevent greenlet, a blocking gRPC channel and Locust's own bookkeeping,
and on a 2-core machine that CPU comes out of the server being measured. This driver plays
the same conversation scenario (loadtest/scenario.py: the same lines, token pacing, think
times, and the same strict underrun rule) on grpc.aio, and reports its own CPU seconds, so
a capacity figure can say how much of the machine the driver took.

Writes <out>_samples.jsonl in the Locust users' format (events ttfa, utterance, underrun,
stream), plus `refused`: a conversation the server turned away with RESOURCE_EXHAUSTED at
its start; the user waits the server's `retry-after-ms` hint and tries again; and `cut`: a
turn still under way `GRACE_S` after the run's end, stopped there as Locust's stop timeout
stops a user (not a failure: under pacing a long turn may legitimately run that long). Prints one
JSON line: users, wall and CPU seconds, and event counts. Users start spread over the first
3 s (--ramp-s; 0 starts them together).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from pathlib import Path

import grpc

from loadtest.scenario import (
    DEMO_VOICES,
    RATE,
    THINK_FAST_S,
    THINK_S,
    TOKEN_GAP_S,
    Playback,
    refusal_wait,
    turn_text,
)
from service.fragments import llm_tokens
from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc
from service.routing import voice_route

GRACE_S = 5.0  # at the deadline a turn under way may finish within this (Locust's --stop-timeout)


def cpu_seconds() -> float:
    """User + system CPU of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Samples:
    """Events as JSON lines, written once at the end (no file I/O while measuring)."""

    def __init__(self):
        self.rows: list[dict] = []

    def fire(self, user: int, name: str, ms: float, error: str | None = None, **detail) -> None:
        self.rows.append(
            {
                "scenario": "conversation",
                "name": name,
                "ms": round(ms, 2),
                "failed": bool(error),
                "user": user,
                "t": round(time.time(), 3),
                **({"error": error} if error else {}),
                **detail,
            }
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            out[row["name"]] = out.get(row["name"], 0) + 1
        return out


class Conversation:
    """One user: conversations of 2-3 turns with think time between, until the deadline."""

    def __init__(
        self, index: int, stub: pb_grpc.NpcVoiceStub, samples: Samples, deadline: float, think, start_s: float = 0.0
    ):
        self.index, self.stub, self.samples, self.deadline, self.think = index, stub, samples, deadline, think
        self.start_s = start_s  # when this user walks up to its first NPC, from the start of the run

    def fire(self, name: str, ms: float, error: str | None = None, **detail) -> None:
        self.samples.fire(self.index, name, ms, error, **detail)

    async def run(self) -> None:
        await asyncio.sleep(self.start_s)
        while time.monotonic() < self.deadline:
            voice = random.choice(DEMO_VOICES)
            try:
                await self.converse(voice, random.randint(2, 3))
            except TimeoutError:  # (asyncio.wait_for's, at the run's end plus GRACE_S)
                self.fire("cut", 0)
                return
            except grpc.aio.AioRpcError as exc:
                wait = refusal_wait(exc)
                if wait is not None:
                    self.fire("refused", 0, retry_after_ms=round(wait * 1000))
                    await asyncio.sleep(wait)
                    continue
                self.fire("stream", 0, error=f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(random.uniform(*self.think))

    async def converse(self, voice: str, turns: int) -> None:
        call = self.stub.Converse(metadata=voice_route(voice))
        try:
            await call.write(pb.ConverseRequest(config=pb.SessionConfig(voice_id=voice, sample_rate_hz=RATE)))
            first = await call.read()  # SessionStarted, or the refusal as an AioRpcError
            if first is grpc.aio.EOF:
                raise await _status_error(call)
            for t in range(turns):
                if time.monotonic() > self.deadline and t:
                    break
                playback = await self.turn(call, f"t{t}")
                await asyncio.sleep(playback.remaining(time.perf_counter()))
                if t < turns - 1:
                    await asyncio.sleep(random.uniform(*self.think))
            await call.write(pb.ConverseRequest(close=pb.Close()))
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
        finally:
            call.cancel()

    async def turn(self, call, turn_id: str) -> Playback:
        """Speak one turn; returns its playback, whose audio may still be playing."""
        text, cut_index = turn_text()
        cut_at: list[float] = []

        async def send() -> None:  # the LLM: a token every 20-50 ms, then Flush
            try:
                for i, token in enumerate(llm_tokens(text)):
                    await call.write(pb.ConverseRequest(text=pb.TextFragment(text=token, turn_id=turn_id)))
                    if i == cut_index:
                        cut_at.append(time.perf_counter())
                    await asyncio.sleep(random.uniform(*TOKEN_GAP_S))
                cut_at.append(time.perf_counter())
                await call.write(pb.ConverseRequest(flush=pb.Flush(turn_id=turn_id)))
            except grpc.aio.AioRpcError:
                pass  # the stream ended: the reader hears how

        sender = asyncio.create_task(send())
        playback, first, started, chunk = Playback(), None, {}, 0
        try:
            while True:
                resp = await asyncio.wait_for(call.read(), timeout=max(1.0, self.deadline + GRACE_S - time.monotonic()))
                if resp is grpc.aio.EOF:
                    raise await _status_error(call)
                now = time.perf_counter()
                kind = resp.WhichOneof("kind")
                if kind == "audio":
                    if first is None:
                        first = now
                        self.fire("ttfa", max(0.0, now - (cut_at[0] if cut_at else now)) * 1000)
                    gap = playback.push(now, len(resp.audio.audio) / 2 / RATE)
                    if gap:
                        self.fire("underrun", gap, "playback ran dry", utterance=len(started) - 1, chunk=chunk)
                    chunk += 1
                elif kind == "utterance_started":
                    started[resp.utterance_started.utterance_id] = now
                    chunk = 0
                elif kind == "utterance_done":
                    self.fire("utterance", (now - started.get(resp.utterance_done.utterance_id, now)) * 1000)
                elif kind == "flush_done" and resp.flush_done.turn_id == turn_id:
                    return playback
        finally:
            sender.cancel()


async def _status_error(call) -> grpc.aio.AioRpcError:
    """The stream ended without the message we waited for: its status, as the error to raise."""
    code = await call.code()
    return grpc.aio.AioRpcError(
        code, await call.initial_metadata(), await call.trailing_metadata(), await call.details()
    )


async def drive(
    host: str, users: int, seconds: float, fast: bool = False, seed: int | None = None, ramp_s: float | None = None
) -> tuple[Samples, dict]:
    """Run `users` conversations against `host` for `seconds`; returns the events and a summary.
    Users start at random moments within the first `ramp_s` seconds (0: all at once; None: the
    longest think time)."""
    random.seed(seed)
    samples = Samples()
    channels = [grpc.aio.insecure_channel(host) for _ in range(users)]  # one connection per game client
    try:
        stubs = [pb_grpc.NpcVoiceStub(ch) for ch in channels]
        for voice in DEMO_VOICES:  # what a game does at level load
            await stubs[0].WarmVoice(pb.WarmVoiceRequest(voice_id=voice), metadata=voice_route(voice))
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        deadline = wall0 + seconds
        think = THINK_FAST_S if fast else THINK_S
        ramp_s = think[1] if ramp_s is None else ramp_s
        tasks = [
            asyncio.create_task(Conversation(i, stub, samples, deadline, think, random.uniform(0, ramp_s)).run())
            for i, stub in enumerate(stubs)
        ]
        done, pending = await asyncio.wait(tasks, timeout=seconds + GRACE_S + 5)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:  # a driver bug, not a server fault: say so loudly
                raise task.exception()
        wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
    finally:
        for ch in channels:
            await ch.close()
    summary = {"users": users, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "events": samples.counts()}
    return samples, summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--out", type=Path, required=True, help="writes <out>_samples.jsonl")
    ap.add_argument("--fast", action="store_true", help="short think times (tests)")
    ap.add_argument("--seed", type=int)
    ap.add_argument(
        "--ramp-s",
        type=float,
        help="users start at random moments within this many seconds (default: the longest think time, 3 s, "
        "as players walk up to NPCs at independent moments); 0: all at the same instant, a scripted scene "
        "where every prefill and first chunk collide",
    )
    args = ap.parse_args(argv)
    samples, summary = asyncio.run(drive(args.host, args.users, args.seconds, args.fast, args.seed, args.ramp_s))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = args.out.with_name(args.out.name + "_samples.jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in samples.rows))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
