"""Locust users that talk to the NPC voice service the way a game does.

    locust -f loadtest/locustfile.py --host 127.0.0.1:50051 ConversationUser
    locust -f loadtest/locustfile.py --host 127.0.0.1:50051 --tags barks barge_in

Scenarios (one user class and one tag each):
- conversation: LLM-paced text (a token every 20-50 ms) over multi-sentence turns,
  think time between turns;
- barks: one-shot Synthesize;
- barge_in: cancel a turn mid-speech, then start a new one;
- churn: many voices, so the prefix cache evicts and prefills again (run the
  server with a small --kv-cache-mb to see evictions);
- lifecycle: register a voice of its own, hang up on it mid-sentence (the connection
  dropped, no Close), then delete it: what a soak needs to find leaks.

Request events (request_type = scenario):
- ttfa: time to first audio of a turn, from the moment the server could cut the
  turn's first sentence (the token after its final punctuation) or, for barks,
  from the call;
- utterance: UtteranceStarted to UtteranceDone, response_length = audio bytes;
- cancel: Cancel sent to CancelDone; a failure if audio of the cancelled turn
  arrives after the ack;
- underrun: a failure each time a chunk arrives later than the audio already
  delivered would have finished playing in real time (playback starts at the
  first chunk of a turn);
- refused: the server turned a call away with RESOURCE_EXHAUSTED (admission); not a
  failure: the user waits the server's retry hint and goes on.

NPC_LOADTEST_SAMPLES=FILE appends every event as a JSON line (the report script
uses it for exact percentiles); NPC_LOADTEST_FAST=1 shortens think times (tests).
NPC_LOADTEST_CA=ca.pem (with NPC_LOADTEST_SERVER_NAME) connects over TLS, and
NPC_LOADTEST_API_KEY sends an API key with every call.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from gevent.queue import Queue
from locust import User, between, tag, task

from loadtest.scenario import (
    DEMO_VOICES,
    RATE,
    SENTENCES,
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
from service.tls import open_channel

grpc_gevent.init_gevent()  # grpc's own threads must yield to gevent's loop

FAST = os.environ.get("NPC_LOADTEST_FAST") == "1"
SAMPLES = os.environ.get("NPC_LOADTEST_SAMPLES")
CHURN_VOICES = [f"churn-{i:02d}" for i in range(int(os.environ.get("NPC_LOADTEST_CHURN_VOICES", "24")))]

_user_numbers = itertools.count()


class NpcVoiceUser(User):
    abstract = True
    host = "127.0.0.1:50051"
    wait_time = between(*THINK_FAST_S) if FAST else between(*THINK_S)
    scenario = "conversation"

    def on_start(self) -> None:
        self.user_index = next(_user_numbers)
        env = os.environ.get
        self.channel = open_channel(
            self.host, env("NPC_LOADTEST_CA"), env("NPC_LOADTEST_SERVER_NAME"), api_key=env("NPC_LOADTEST_API_KEY")
        )
        self.stub = pb_grpc.NpcVoiceStub(self.channel)
        for voice in DEMO_VOICES:  # what a game does at level load
            self.stub.WarmVoice(pb.WarmVoiceRequest(voice_id=voice), metadata=voice_route(voice))

    def on_stop(self) -> None:
        self.channel.close()

    def fire(self, name: str, ms: float, length: int = 0, error: str | None = None, **detail) -> None:
        self.environment.events.request.fire(
            request_type=self.scenario,
            name=name,
            response_time=ms,
            response_length=length,
            exception=Exception(error) if error else None,
            context={},
        )
        if SAMPLES:
            with open(SAMPLES, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "scenario": self.scenario,
                            "name": name,
                            "ms": round(ms, 2),
                            "failed": bool(error),
                            "user": self.user_index,
                            "t": round(time.time(), 3),
                            **detail,
                        }
                    )
                    + "\n"
                )

    def ended(self, exc: grpc.RpcError) -> None:
        """A call that ended in an error. RESOURCE_EXHAUSTED is admission saying no, not a broken
        protocol: the user waits the server's retry hint, as a game would, and goes on."""
        wait = refusal_wait(exc)
        if wait is not None:
            self.fire("refused", 0, retry_after_ms=round(wait * 1000))
            gevent.sleep(wait)
        else:
            self.fire("stream", 0, error=f"{exc.code().name}: {exc.details()}")

    # ---- one conversation, several turns ---------------------------------------------------
    def converse(self, voice: str, turns: int, barge_in: bool = False) -> None:
        requests: Queue = Queue()
        requests.put(pb.ConverseRequest(config=pb.SessionConfig(voice_id=voice, sample_rate_hz=RATE)))
        call = self.stub.Converse(iter(requests.get, None), metadata=voice_route(voice))
        responses = iter(call)
        cancelled: set[str] = set()  # turns whose CancelDone came: none of their audio may follow
        try:
            next(responses)  # SessionStarted
            for t in range(turns):
                playback = self.turn(requests, responses, f"t{t}", barge_in, cancelled)
                gevent.sleep(playback.remaining(time.perf_counter()))
                if t < turns - 1:
                    gevent.sleep(self.wait_time())
            requests.put(pb.ConverseRequest(close=pb.Close()))
            requests.put(None)
            for resp in responses:
                self.check_not_cancelled(resp, cancelled)
        except grpc.RpcError as exc:
            self.ended(exc)
        finally:
            call.cancel()

    def check_not_cancelled(self, resp, cancelled: set[str]) -> bool:
        """Fire a failure (and return False) for audio of a turn whose CancelDone already came."""
        if resp.WhichOneof("kind") == "audio" and resp.audio.turn_id in cancelled:
            self.fire("cancel", 0, error="audio of a cancelled turn after CancelDone")
            return False
        return True

    def turn(self, requests: Queue, responses, turn_id: str, barge_in: bool, cancelled: set[str]) -> Playback:
        """Speak one turn; returns its playback, whose audio may still be playing (a barge-in
        stops it: nothing remains)."""
        text, cut_index = turn_text()
        tokens = llm_tokens(text)
        state = {"cut_at": None, "stop": False, "cancel_at": None}

        def send() -> None:  # the LLM: a token every 20-50 ms, then Flush
            for i, token in enumerate(tokens):
                if state["stop"]:
                    return
                requests.put(pb.ConverseRequest(text=pb.TextFragment(text=token, turn_id=turn_id)))
                if i == cut_index:
                    state["cut_at"] = time.perf_counter()
                gevent.sleep(random.uniform(*TOKEN_GAP_S))
            state["cut_at"] = state["cut_at"] or time.perf_counter()
            requests.put(pb.ConverseRequest(flush=pb.Flush(turn_id=turn_id)))

        def cancel_later() -> None:
            gevent.sleep(random.uniform(0.3, 1.0))
            state["stop"] = True
            state["cancel_at"] = time.perf_counter()
            requests.put(pb.ConverseRequest(cancel=pb.Cancel(turn_id=turn_id)))

        greenlets = [gevent.spawn(send)]
        playback, first, started = Playback(), None, {}
        chunk = 0  # index of the chunk within its utterance
        try:
            for resp in responses:
                now = time.perf_counter()
                kind = resp.WhichOneof("kind")
                if not self.check_not_cancelled(resp, cancelled):
                    continue
                if kind == "audio":
                    if first is None:
                        first = now
                        self.fire("ttfa", max(0.0, now - (state["cut_at"] or now)) * 1000)
                        if barge_in:
                            greenlets.append(gevent.spawn(cancel_later))
                    gap = playback.push(now, len(resp.audio.audio) / 2 / RATE)
                    if gap:
                        self.fire(
                            "underrun",
                            gap,
                            error="playback ran dry (response_time = gap in ms)",
                            utterance=len(started) - 1,
                            chunk=chunk,
                        )
                    chunk += 1
                elif kind == "utterance_started":
                    started[resp.utterance_started.utterance_id] = now
                    chunk = 0
                elif kind == "utterance_done":
                    d = resp.utterance_done
                    self.fire(
                        "utterance", (now - started.get(d.utterance_id, now)) * 1000, int(d.audio_seconds * RATE * 2)
                    )
                elif kind == "cancel_done" and resp.cancel_done.turn_id == turn_id:
                    self.fire("cancel", (now - (state["cancel_at"] or now)) * 1000)
                    cancelled.add(turn_id)
                    return Playback()  # the player cut the line off: nothing left to hear
                elif kind == "flush_done" and resp.flush_done.turn_id == turn_id:
                    return playback
            return playback
        finally:
            state["stop"] = True
            gevent.killall(greenlets)


class ConversationUser(NpcVoiceUser):
    scenario = "conversation"

    @tag("conversation")
    @task
    def conversation(self) -> None:
        self.converse(random.choice(DEMO_VOICES), turns=random.randint(2, 3))


class BargeInUser(NpcVoiceUser):
    scenario = "barge_in"

    @tag("barge_in")
    @task
    def barge_in(self) -> None:
        self.converse(random.choice(DEMO_VOICES), turns=2, barge_in=True)


class BarkUser(NpcVoiceUser):
    scenario = "bark"

    @tag("barks")
    @task
    def bark(self) -> None:
        line = random.choice(
            [
                "Over here!",
                "Yes!",
                "Behind you!",
                "Halt!",
                "I need 10k gold.",
                "For the king!",
                random.choice(SENTENCES),
            ]
        )
        start = time.perf_counter()
        playback, first, began = Playback(), None, start
        try:
            voice = random.choice(DEMO_VOICES)
            for resp in self.stub.Synthesize(
                pb.SynthesizeRequest(voice_id=voice, text=line, sample_rate_hz=RATE), metadata=voice_route(voice)
            ):
                now = time.perf_counter()
                kind = resp.WhichOneof("kind")
                if kind == "audio":
                    if first is None:
                        first = now
                        self.fire("ttfa", (now - start) * 1000)
                    gap = playback.push(now, len(resp.audio.audio) / 2 / RATE)
                    if gap:
                        self.fire("underrun", gap, error="playback ran dry (response_time = gap in ms)")
                elif kind == "utterance_started":
                    began = now
                elif kind == "utterance_done":
                    self.fire("utterance", (now - began) * 1000, int(resp.utterance_done.audio_seconds * RATE * 2))
        except grpc.RpcError as exc:
            self.ended(exc)


class ChurnUser(NpcVoiceUser):
    """Many voices in rotation, so the prefix cache must evict and prefill again."""

    scenario = "churn"

    def on_start(self) -> None:
        super().on_start()
        from engine.audio import speechlike_wave
        from service.audio_input import encode_wav

        for i, voice_id in enumerate(CHURN_VOICES):
            wav = encode_wav(speechlike_wave(4.0, 16000, f0=90.0 + 7 * i, syllable_hz=3.0 + 0.1 * i, floor=0.05), 16000)
            try:
                self.stub.RegisterVoice(
                    pb.RegisterVoiceRequest(
                        voice_id=voice_id, reference_wav=wav, transcript="Another face in the crowd, friend."
                    ),
                    metadata=voice_route(voice_id),
                )
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise

    @tag("churn")
    @task
    def churn(self) -> None:
        self.converse(random.choice(CHURN_VOICES), turns=1)


class LifecycleUser(NpcVoiceUser):
    """A voice registered, spoken in, hung up on mid-speech, and deleted."""

    scenario = "lifecycle"

    @tag("lifecycle")
    @task
    def lifecycle(self) -> None:
        from engine.audio import speechlike_wave
        from service.audio_input import encode_wav

        voice_id = f"life-{self.user_index}"
        wav = encode_wav(speechlike_wave(3.5, 16000, f0=100.0 + 10 * (self.user_index % 9), floor=0.05), 16000)
        start = time.perf_counter()
        try:
            self.stub.RegisterVoice(
                pb.RegisterVoiceRequest(
                    voice_id=voice_id, reference_wav=wav, transcript="A voice for a moment.", overwrite=True
                ),
                metadata=voice_route(voice_id),
            )
            self.fire("register", (time.perf_counter() - start) * 1000)
            cfg = pb.SessionConfig(voice_id=voice_id, sample_rate_hz=RATE)
            text = pb.TextFragment(text=" ".join(random.sample(SENTENCES, 2)))
            call = self.stub.Converse(
                iter([pb.ConverseRequest(config=cfg), pb.ConverseRequest(text=text)]), metadata=voice_route(voice_id)
            )
            for resp in call:
                if resp.WhichOneof("kind") == "audio":
                    break
            call.cancel()  # the player walked away: the connection drops mid-sentence
            self.fire("hang_up", 0)
            start = time.perf_counter()
            self.stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id=voice_id), metadata=voice_route(voice_id))
            self.fire("delete", (time.perf_counter() - start) * 1000)
        except grpc.RpcError as exc:
            self.ended(exc)
