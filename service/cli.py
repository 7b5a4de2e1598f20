"""Command line: run the server, speak a line into a WAV file, manage voices.

python -m service serve [--port 50051] [--voices-dir voices]
python -m service say "Over here! The bridge is out." --voice guard --out line.wav
python -m service voices list | add ID REF.wav "transcript" | rm ID | warm ID
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import grpc

from engine.audio import from_pcm16
from engine.config import (
    DECODE_ATTENTIONS,
    PACKED_DTYPES,
    AdaptConfig,
    CacheConfig,
    EngineConfig,
    SchedulerConfig,
    StreamConfig,
)
from service.auth import Keys, add_key
from service.config import ServiceConfig
from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc
from service.logs import setup as log_setup
from service.routing import voice_route
from service.tls import open_channel, server_tls

# The engine thread and the codec stop waiting for each other's GIL (engine.runtime.audio_process).
SERVE_AUDIO_PROCESS = True
# Admission as measured on the 2-core reference machine (docs/benchmarks.md, "Past capacity"):
# 16 conversations hold real time when they start at most 8 at once and 5 a second after that,
# and a fresh server's first crowd ran listeners dry less after a 16-stream warm-up. On slower
# hardware, listeners that keep running dry lower these (limit_raise_s; docs/benchmarks.md, "An
# AVX2 host"). The library's ServiceConfig admits by count alone (64).
SERVE_DEFAULTS = ServiceConfig(
    max_sessions=16, min_slack_ms=20.0, limit_raise_s=30.0, starts_per_s=5.0, start_burst=8, warmup_streams=16
)


def serve(args: argparse.Namespace) -> None:
    from engine import Engine
    from engine.models import SHIPPED_MODEL_DIR, default_model_dir
    from engine.packed import server_packed_dtype
    from service.server import start_server

    try:
        tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
        keys = Keys(args.keys) if args.keys else Keys.from_env()
    except (ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")
    if keys is None and not is_loopback(args.host):
        sys.exit(
            f"error: --host {args.host} would let other machines in with no authentication; give --keys "
            "(or NPC_VOICE_KEYS), or keep the default loopback host"
        )
    if keys is None:
        logging.warning("no API keys: every RPC is open to anyone on this machine (loopback only)")
    try:
        config = ServiceConfig(
            tls=tls,
            keys=keys,
            host=args.host,
            port=args.port,
            voice_store=args.voices,
            lexicon_path=Path(args.lexicon) if args.lexicon else None,
            max_sessions=args.max_sessions,
            min_slack_ms=args.min_slack_ms,
            limit_raise_s=args.limit_raise_s,
            starts_per_s=args.starts_per_s,
            start_burst=args.start_burst,
            start_hold_s=args.start_hold_s,
            warmup_streams=args.warmup_streams,
            freeze_heap=not args.no_freeze_heap,
            switch_interval_ms=args.switch_interval_ms,
            demo_voices=not args.no_demo_voices,
            metrics_port=args.metrics_port,
        )
        engine_config = EngineConfig(
            cache=CacheConfig(memory_budget_mb=args.kv_cache_mb, prefix_cache=not args.no_prefix_cache),
            scheduler=SchedulerConfig(
                max_running=args.max_batch,
                pace_lead_s=args.pace_s,
                urgent_lead_s=args.urgent_lead_s,
                max_starting=args.max_starting,
            ),
            adapt=AdaptConfig(
                steps=args.voice_adapt_steps, lm_share=args.voice_adapt_lm_share, lm_match=args.voice_adapt_lm_match
            ),
            stream=StreamConfig(first_chunk_ms=args.first_chunk_ms, audio_process=args.audio_process),
            packed_dtype=args.packed_dtype or server_packed_dtype(),
            decode_attention=args.decode_attention,
        )
    except ValueError as exc:  # (both checked before the model loads, which takes seconds)
        sys.exit(f"error: {exc}")
    model_dir = Path(args.model) if args.model else default_model_dir()
    engine = Engine(model_dir, engine_config)
    if model_dir != SHIPPED_MODEL_DIR and not args.model:
        logging.warning(
            "the trained model is missing from %s: serving the random-weight toy model from %s. "
            "Its audio is noise-like and carries no words.",
            SHIPPED_MODEL_DIR,
            model_dir,
        )

    async def run() -> None:
        server, port, servicer = await start_server(engine, config)
        print(f"npc-voice serving on {args.host}:{port} (Ctrl-C or SIGTERM drains and stops)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        # Drain: health NOT_SERVING, new work refused, conversations finish their turn in
        # progress; whatever is still open at the deadline ends with UNAVAILABLE.
        await servicer.drain()
        deadline = loop.time() + args.drain_seconds
        while servicer.sessions and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if servicer.sessions:
            logging.info("drain deadline: ending %d open streams", servicer.sessions)
            servicer.end_all()
            await asyncio.sleep(0.5)  # let their statuses go out
        await server.stop(grace=1.0)
        servicer.voices.close()

    try:
        asyncio.run(run())
    finally:
        engine.close()


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keys(args: argparse.Namespace) -> None:
    try:
        token = add_key(args.file, args.name, args.roles.split(","), args.tenant or "")
    except (ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")
    print(f"added key {args.name!r} to {args.file}; its token (shown only now):\n{token}")


def say(args: argparse.Namespace) -> None:
    """Stream a line through a Converse session, word by word like an LLM, into a WAV file."""

    from service.audio_input import encode_wav
    from service.fragments import llm_tokens

    def requests():
        yield pb.ConverseRequest(config=pb.SessionConfig(voice_id=args.voice, sample_rate_hz=args.rate))
        for token in llm_tokens(args.text):
            yield pb.ConverseRequest(text=pb.TextFragment(text=token))
        yield pb.ConverseRequest(close=pb.Close())

    pcm, first, start = [], None, time.perf_counter()
    with client_channel(args) as channel:
        stub = pb_grpc.NpcVoiceStub(channel)
        try:
            for resp in stub.Converse(requests(), metadata=voice_route(args.voice)):
                kind = resp.WhichOneof("kind")
                if kind == "audio":
                    first = first or time.perf_counter()
                    pcm.append(resp.audio.audio)
                elif kind == "utterance_done":
                    d = resp.utterance_done
                    print(
                        f"  utterance {d.utterance_id}: {d.audio_seconds:.2f} s audio, "
                        f"rtf {d.real_time_factor:.2f}, {d.text!r}"
                    )
        except grpc.RpcError as exc:
            sys.exit(f"error: {exc.code().name}: {exc.details()}")
    samples = from_pcm16(b"".join(pcm))
    Path(args.out).write_bytes(encode_wav(samples, args.rate))
    ttfa = (first - start) * 1000 if first else float("nan")
    print(f"time to first audio {ttfa:.0f} ms; wrote {len(samples) / args.rate:.2f} s to {args.out}")


def client_channel(args: argparse.Namespace) -> grpc.Channel:
    token = args.api_key or os.environ.get("NPC_VOICE_API_KEY")
    try:
        return open_channel(args.server, args.tls_ca, args.tls_server_name, args.tls_cert, args.tls_key, token)
    except (ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")


def add_client_tls(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", help="CA certificate (PEM) that signed the server's: connect with TLS")
    p.add_argument("--tls-server-name", help="name to check the server's certificate against (default: the host)")
    p.add_argument("--tls-cert", help="client certificate (PEM), for a server that wants mutual TLS")
    p.add_argument("--tls-key", help="client private key (PEM)")
    p.add_argument("--api-key", help="API key for a server with keys (default: $NPC_VOICE_API_KEY)")


def voices(args: argparse.Namespace) -> None:
    with client_channel(args) as channel:
        stub = pb_grpc.NpcVoiceStub(channel)
        try:
            if args.action == "list":
                resp = stub.ListVoices(pb.ListVoicesRequest())
                for v in resp.voices:
                    print(
                        f"{v.voice_id:16} {v.display_name:20} {v.reference_seconds:5.1f} s  "
                        f"{'cached' if v.cached else '      '}  {'demo' if v.demo else ''}"
                    )
                for b in resp.broken:
                    print(f"{b.voice_id:16} BROKEN: {b.error}")
            elif args.action == "add":
                v = stub.RegisterVoice(
                    pb.RegisterVoiceRequest(
                        voice_id=args.voice_id,
                        reference_wav=Path(args.wav).read_bytes(),
                        transcript=args.transcript,
                        display_name=args.name or "",
                        overwrite=args.overwrite,
                    ),
                    metadata=voice_route(args.voice_id),
                )
                print(
                    f"registered {v.voice_id}: {v.reference_seconds:.1f} s reference, {v.prompt_frames} prompt frames"
                )
            elif args.action == "rm":
                stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id=args.voice_id), metadata=voice_route(args.voice_id))
                print(f"deleted {args.voice_id}")
            elif args.action == "warm":
                r = stub.WarmVoice(pb.WarmVoiceRequest(voice_id=args.voice_id), metadata=voice_route(args.voice_id))
                print(f"{args.voice_id}: {'already cached' if r.was_cached else 'prefilled'} in {r.elapsed_ms:.0f} ms")
        except grpc.RpcError as exc:
            sys.exit(f"error: {exc.code().name}: {exc.details()}")


def parser() -> argparse.ArgumentParser:
    """Every command's flags (the deploy files' tests parse their `serve` lines with it)."""
    ap = argparse.ArgumentParser(prog="npc-voice", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gRPC server", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    svc, eng = SERVE_DEFAULTS, EngineConfig()
    s.add_argument("--host", default=svc.host, help="0.0.0.0 to accept other machines")
    s.add_argument("--port", type=int, default=svc.port, help="0 picks a free port")
    s.add_argument(
        "--voices",
        "--voices-dir",
        default=svc.voice_store,
        help="where registered voices are stored: a folder, or redis://HOST:PORT/DB shared by replicas",
    )
    s.add_argument("--model", help="model directory (config.json + model.safetensors; default: the shipped model)")
    s.add_argument("--lexicon", help="pronunciation dictionary JSON (reloaded on change)")
    s.add_argument("--kv-cache-mb", type=float, default=eng.cache.memory_budget_mb, help="KV block pool size")
    s.add_argument(
        "--max-sessions",
        type=int,
        default=svc.max_sessions,
        help="open Converse + Synthesize streams; more get RESOURCE_EXHAUSTED (fewer for a while after "
        "listeners ran dry: --limit-raise-s)",
    )
    s.add_argument(
        "--min-slack-ms",
        type=float,
        default=svc.min_slack_ms,
        help="refuse new streams (RESOURCE_EXHAUSTED with a retry hint) while some listener's audio came "
        f"within this many ms of running dry in the last {svc.headroom_window_s:.0f} s; 0: by count only",
    )
    s.add_argument(
        "--limit-raise-s",
        type=float,
        default=svc.limit_raise_s,
        help="listeners run dry again within this many seconds (after a first thin moment) lower the limit on "
        "open streams to those then open minus one; each this many seconds with none run dry raises it by "
        "one, up to --max-sessions; 0: the limit stays fixed",
    )
    s.add_argument(
        "--starts-per-s",
        type=float,
        default=svc.starts_per_s,
        help="new streams admitted per second once --start-burst have come at once; more get "
        "RESOURCE_EXHAUSTED with a retry hint; 0: no limit",
    )
    s.add_argument("--start-burst", type=int, default=svc.start_burst, help="new streams admitted at once")
    s.add_argument(
        "--start-hold-s",
        type=float,
        default=svc.start_hold_s,
        help="a new stream whose start comes within this many seconds waits for it (before SessionStarted) "
        "instead of being refused",
    )
    s.add_argument(
        "--warmup-streams",
        type=int,
        default=svc.warmup_streams,
        help="before reporting SERVING, speak this many utterances at once in a stored voice, so the first "
        "players do not pay for the engine's first use of each batch size; 0: none",
    )
    s.add_argument(
        "--no-freeze-heap",
        action="store_true",
        help="leave start-up's objects to the garbage collector (by default they are exempted once the "
        "server is up, so full collections stay short)",
    )
    s.add_argument(
        "--pace-s",
        type=float,
        default=SchedulerConfig.pace_lead_s,
        help="generate a stream only while it has less than this many seconds of audio ahead of playback "
        "(then up to twice that), so streams share engine steps; it slows Synthesize and any client that "
        "does not play in real time to real time; 0: as fast as possible",
    )
    s.add_argument(
        "--urgent-lead-s",
        type=float,
        default=SchedulerConfig.urgent_lead_s,
        help="while a stream has less than this many seconds of audio ahead of playback, streams with "
        "more than twice that sit out the engine's steps, so it gets its frames sooner; 0: off",
    )
    s.add_argument(
        "--max-starting",
        type=int,
        default=SchedulerConfig.max_starting,
        help="turn starts in flight at once: a reply whose listener waits for it begins only while fewer "
        f"than this many others began within {SchedulerConfig.start_window_s} s; 0: off",
    )
    s.add_argument(
        "--first-chunk-ms",
        type=float,
        default=StreamConfig.first_chunk_ms,
        help="audio in an utterance's first chunk: less comes sooner, more leaves playback a larger "
        "cushion while the next chunk is made",
    )
    s.add_argument(
        "--audio-process",
        action=argparse.BooleanOptionalAction,
        default=SERVE_AUDIO_PROCESS,
        help="decode audio in a child process with its own interpreter lock (codecs without per-stream "
        "state, on CPU); --no-audio-process: on a thread of the server",
    )
    s.add_argument("--no-demo-voices", action="store_true")
    s.add_argument(
        "--max-batch",
        type=int,
        default=eng.scheduler.max_running,
        help="streams decoded together (1 disables batching)",
    )
    s.add_argument("--no-prefix-cache", action="store_true", help="compute every prompt in full (baseline)")
    s.add_argument(
        "--switch-interval-ms",
        type=float,
        default=svc.switch_interval_ms,
        help="the interpreter's thread switch interval: how long the engine thread may wait for the "
        "interpreter lock after another thread takes it (Python's own is 5)",
    )
    s.add_argument(
        "--voice-adapt-steps",
        type=int,
        default=eng.adapt.steps,
        help="tune the codec to each new voice's reference for this many steps (~10 s per voice "
        "on one core; 0 turns it off; voices stored under another setting are made again at start)",
    )
    s.add_argument(
        "--voice-adapt-lm-share",
        type=float,
        default=eng.adapt.lm_share,
        help="share of the decoder's steps tuned on the model's own reading of the reference transcript "
        "(0: the reference's codes only; docs/experiments.md, adapting on the LM's rendering)",
    )
    s.add_argument(
        "--voice-adapt-lm-match",
        choices=("frames", "stats"),
        default=eng.adapt.lm_match,
        help="how those steps compare the reading with the reference: frames, warped onto it frame by "
        "frame; stats, each mel band's mean and spread, with no alignment (docs/experiments.md)",
    )
    s.add_argument(
        "--packed-dtype",
        choices=PACKED_DTYPES,
        help="weights of the CPU kernels: int8 is fastest for a few streams, bfloat16 for 12 or more "
        "per process (docs/architecture.md, CPU kernels). Default: bfloat16 where the CPU multiplies "
        "it natively, else auto",
    )
    s.add_argument(
        "--decode-attention",
        default=eng.decode_attention,
        choices=DECODE_ATTENTIONS,
        help="CPU decode attention (docs/architecture.md)",
    )
    s.add_argument("--keys", help="API keys file (service/auth.py; default: $NPC_VOICE_KEYS, else none)")
    s.add_argument("--log-format", choices=("text", "json"), default="text", help="json: one object per line")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port at /metrics (on --host)")
    s.add_argument(
        "--drain-seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, how long open conversations get to finish their turn in progress",
    )
    s.add_argument("--tls-cert", help="serve TLS with this certificate chain (PEM; needs --tls-key)")
    s.add_argument("--tls-key", help="private key (PEM) of --tls-cert")
    s.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    s.set_defaults(fn=serve)
    s = sub.add_parser("keys", help="add an API key to a keys file; prints its token once")
    s.add_argument("file")
    s.add_argument("name")
    s.add_argument("--roles", default="speak", help="comma-separated: speak, voices, admin")
    s.add_argument("--tenant", help="the key works in this tenant's voices only")
    s.set_defaults(fn=keys)
    s = sub.add_parser("say", help="speak a line into a WAV file")
    s.add_argument("text")
    s.add_argument("--voice", default="guard")
    s.add_argument("--out", default="line.wav")
    s.add_argument("--rate", type=int, default=svc.default_sample_rate)
    s.add_argument("--server", default=f"{svc.host}:{svc.port}")
    add_client_tls(s)
    s.set_defaults(fn=say)
    s = sub.add_parser("voices", help="list, add, remove or warm voices")
    s.add_argument("--server", default=f"{svc.host}:{svc.port}")
    add_client_tls(s)
    vs = s.add_subparsers(dest="action", required=True)
    vs.add_parser("list")
    a = vs.add_parser("add")
    a.add_argument("voice_id")
    a.add_argument("wav")
    a.add_argument("transcript")
    a.add_argument("--name")
    a.add_argument("--overwrite", action="store_true")
    for action in ("rm", "warm"):
        vs.add_parser(action).add_argument("voice_id")
    s.set_defaults(fn=voices)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    log_setup(getattr(args, "log_format", "text"))
    args.fn(args)
