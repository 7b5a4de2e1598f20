"""A minimal, readable client for the NPC voice service: the reference for other languages.

    python sdk_examples/python/npc_client.py converse --voice guard --out reply.wav
    python sdk_examples/python/npc_client.py bark --voice sprite "Over here!" --out bark.wav
    python sdk_examples/python/npc_client.py register blacksmith ref.wav "What the reference says."

Three things a game does, each in one function:
- `converse`: one bidirectional stream per NPC conversation. Text goes in as an
  LLM writes it; audio, word timings and acknowledgements come back.
- `bark`: a one-shot line over `Synthesize`.
- `register`: a new character voice from a short recording and its transcript.

It uses the Python code generated from protos/ that the server ships
(`service.gen`); another language generates its own from the same .proto.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
import wave
from pathlib import Path

import grpc

from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc

RATE = 48000  # what Unity and Unreal mix at; the server resamples to any rate in 8000-48000


def route(voice: str) -> tuple[tuple[str, str], ...]:
    """Every call about one voice names it in this header: behind a load balancer with
    voice affinity (deploy/haproxy.cfg), the call reaches the replica that has the voice's
    prompt cached. A single server ignores it."""
    return (("x-npc-voice", voice),)


def write_wav(path: str, pcm16: bytes, rate: int = RATE) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)


def fake_llm(reply: str, seconds_per_token: float = 0.03):
    """Stands in for an LLM: yields the reply a word at a time, at LLM speed."""
    for i, word in enumerate(reply.split(" ")):
        time.sleep(seconds_per_token)
        yield word if i == 0 else " " + word


def converse(stub: pb_grpc.NpcVoiceStub, voice: str, replies: list[str], out: str, barge_in: bool) -> None:
    """Speak several LLM replies (turns) in one conversation; optionally interrupt the first."""
    outgoing: queue.Queue = queue.Queue()  # requests are sent from this queue as they are put
    outgoing.put(pb.ConverseRequest(config=pb.SessionConfig(voice_id=voice, sample_rate_hz=RATE, encoding=pb.PCM16)))
    responses = stub.Converse(iter(outgoing.get, None), metadata=route(voice))  # None ends the request stream

    def llm_side() -> None:
        for turn, reply in enumerate(replies):
            turn_id = f"turn-{turn}"
            for token in fake_llm(reply):
                outgoing.put(pb.ConverseRequest(text=pb.TextFragment(text=token, turn_id=turn_id)))
            outgoing.put(pb.ConverseRequest(flush=pb.Flush(turn_id=turn_id)))  # end of the LLM's reply
            turn_done[turn_id].wait()
        outgoing.put(pb.ConverseRequest(close=pb.Close()))  # finish, then end
        outgoing.put(None)

    turn_done = {f"turn-{i}": threading.Event() for i in range(len(replies))}
    threading.Thread(target=llm_side, daemon=True).start()

    audio, start, first = bytearray(), time.perf_counter(), None
    for resp in responses:
        kind = resp.WhichOneof("kind")
        if kind == "started":
            s = resp.started
            print(
                f"session {s.session_id}: {s.format.sample_rate_hz} Hz, voice cached: {s.voice_cached}, "
                f"timing marks: {s.timings_available}"
            )
        elif kind == "utterance_started":
            print(f"  speaking: {resp.utterance_started.text!r}")
        elif kind == "audio":
            first = first or time.perf_counter()
            audio += resp.audio.audio  # a game queues this for its audio thread
            if barge_in and resp.audio.turn_id == "turn-0" and len(audio) > RATE:  # ~0.5 s in: interrupt
                barge_in = interrupt(outgoing)
        elif kind == "mark":
            m = resp.mark  # drive lip sync from these
            print(f"    {pb.TimingKind.Name(m.kind).lower()} {m.text!r} {m.start_ms}-{m.end_ms} ms")
        elif kind == "utterance_done":
            d = resp.utterance_done
            if barge_in and d.turn_id == "turn-0":  # a first sentence under half a second: interrupt after it
                barge_in = interrupt(outgoing)
            print(
                f"  done: {d.audio_seconds:.2f} s of audio, first audio after {d.ttfa_ms:.0f} ms, "
                f"real-time factor {d.real_time_factor:.2f}"
            )
        elif kind == "cancel_done":
            print(f"  cancelled {resp.cancel_done.turn_id}")
            turn_done[resp.cancel_done.turn_id].set()
        elif kind == "flush_done":
            print(f"  finished {resp.flush_done.turn_id}")
            turn_done[resp.flush_done.turn_id].set()
    write_wav(out, bytes(audio))
    print(f"first audio {(first - start) * 1000:.0f} ms after connecting; wrote {len(audio) / 2 / RATE:.2f} s to {out}")


def interrupt(outgoing: queue.Queue) -> bool:
    """The player cuts the first reply short: Cancel its turn. Returns False (barged in)."""
    outgoing.put(pb.ConverseRequest(cancel=pb.Cancel(turn_id="turn-0")))
    return False


def bark(stub: pb_grpc.NpcVoiceStub, voice: str, text: str, out: str) -> None:
    audio = bytearray()
    request = pb.SynthesizeRequest(voice_id=voice, text=text, sample_rate_hz=RATE)
    for resp in stub.Synthesize(request, metadata=route(voice)):
        if resp.WhichOneof("kind") == "audio":
            audio += resp.audio.audio
    write_wav(out, bytes(audio))
    print(f"wrote {len(audio) / 2 / RATE:.2f} s to {out}")


def register(stub: pb_grpc.NpcVoiceStub, voice_id: str, wav_path: str, transcript: str) -> None:
    voice = stub.RegisterVoice(
        pb.RegisterVoiceRequest(
            voice_id=voice_id, reference_wav=Path(wav_path).read_bytes(), transcript=transcript, overwrite=True
        ),
        metadata=route(voice_id),
    )
    print(f"registered {voice.voice_id}: {voice.reference_seconds:.1f} s reference")
    # At level load, so the first line starts fast:
    warm = stub.WarmVoice(pb.WarmVoiceRequest(voice_id=voice_id), metadata=route(voice_id))
    print(f"warmed in {warm.elapsed_ms:.0f} ms")


def open_channel(server: str, ca: str | None, server_name: str | None, api_key: str | None) -> grpc.Channel:
    """Plaintext to a local server; TLS checked against `ca` otherwise. An API key rides on
    every call as `authorization: Bearer` (gRPC sends call credentials only over TLS or to
    this machine, hence the local credentials without a CA)."""
    if ca is None and api_key is None:
        return grpc.insecure_channel(server)
    creds = grpc.ssl_channel_credentials(Path(ca).read_bytes()) if ca else grpc.local_channel_credentials()
    if api_key:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(api_key))
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(server, creds, options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--ca", help="CA certificate (PEM) of a TLS server")
    ap.add_argument("--server-name", help="the name in the server's certificate, if not the host")
    ap.add_argument("--api-key", help="API key of a server that wants one")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("converse")
    c.add_argument("--voice", default="guard")
    c.add_argument("--out", default="reply.wav")
    c.add_argument(
        "--barge-in", action="store_true", help="interrupt the first reply 0.5 s in (or after its first sentence)"
    )
    c.add_argument(
        "replies",
        nargs="*",
        default=[
            "Halt! The gate is closed after dark, traveler.",
            "Fine, fine. Show me your papers and I'll think about it.",
        ],
    )
    b = sub.add_parser("bark")
    b.add_argument("text")
    b.add_argument("--voice", default="guard")
    b.add_argument("--out", default="bark.wav")
    r = sub.add_parser("register")
    r.add_argument("voice_id")
    r.add_argument("wav")
    r.add_argument("transcript")
    args = ap.parse_args()
    with open_channel(args.server, args.ca, args.server_name, args.api_key) as channel:
        stub = pb_grpc.NpcVoiceStub(channel)
        try:
            if args.command == "converse":
                converse(stub, args.voice, args.replies, args.out, args.barge_in)
            elif args.command == "bark":
                bark(stub, args.voice, args.text, args.out)
            else:
                register(stub, args.voice_id, args.wav, args.transcript)
        except grpc.RpcError as exc:  # every error is a status with a helpful message
            sys.exit(f"{exc.code().name}: {exc.details()}")


if __name__ == "__main__":
    main()
