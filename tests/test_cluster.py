"""A real cluster on loopback: redis-server as the shared voice store, three replicas of the
service, and nginx with deploy/nginx.conf in front (loadtest/cluster.py).

- a voice's calls land on one replica (only its prefix-cache counters move);
- a voice registered through the balancer is spoken by every replica, within the sync;
- a full replica's RESOURCE_EXHAUSTED reaches the client through the balancer with its
  retry hint (the balancer does not retry a gRPC status; the client does);
- a replica stopped with SIGTERM finishes the turn in progress, then ends the stream with
  UNAVAILABLE, and its voices move;
- killing a replica mid-conversation ends that conversation (the balancer resets it),
  another conversation carries on, and the killed replica's voices are spoken by the
  survivors.
The last two run last, in this order: each leaves the cluster one replica short."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from queue import Queue

import grpc
import pytest

from engine.audio import speechlike_wave
from loadtest.cluster import Cluster, have_cluster_tools
from loadtest.harness import ROOT
from service.audio_input import encode_wav
from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc
from service.routing import voice_route
from tests.support import eventually

pytestmark = pytest.mark.skipif(have_cluster_tools() is not None, reason=str(have_cluster_tools()))

VOICES = [f"npc{i}" for i in range(8)]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
LINE = "The bridge is out, so take the ford past the mill."


@pytest.fixture(scope="module")
def cluster(model_dir, tmp_path_factory):
    args = ["--model", str(model_dir), "--kv-cache-mb", "16", "--voice-adapt-steps", "0", "--no-demo-voices"]
    with Cluster(3, [*args, "--max-sessions", "4"], log_dir=tmp_path_factory.mktemp("cluster")) as c:
        stub = pb_grpc.NpcVoiceStub(grpc.insecure_channel(c.address))
        for i, voice in enumerate(VOICES):
            wav = encode_wav(speechlike_wave(3.0, 16000, f0=100.0 + 15 * i, floor=0.05), 16000)
            request = pb.RegisterVoiceRequest(voice_id=voice, reference_wav=wav, transcript="Hail and well met.")
            stub.RegisterVoice(request, metadata=voice_route(voice), timeout=60)
        yield c


def stub_of(address: str) -> pb_grpc.NpcVoiceStub:
    return pb_grpc.NpcVoiceStub(grpc.insecure_channel(address))


def lookups(cluster: Cluster) -> list[int]:
    """Prefix-cache lookups (hits + misses) per live replica: they move only where a prompt is served."""
    out = []
    for r in cluster.replicas:
        try:
            st = r.stats()
            out.append(st.prefix_hits + st.prefix_misses)
        except grpc.RpcError:  # stopped, or stopping
            out.append(-1)
    return out


def synthesize(stub: pb_grpc.NpcVoiceStub, voice: str, text: str = LINE) -> int:
    request = pb.SynthesizeRequest(voice_id=voice, text=text, sample_rate_hz=16000)
    return sum(len(r.audio.audio) for r in stub.Synthesize(request, metadata=voice_route(voice), timeout=60))


def serving_replica(cluster: Cluster, voice: str) -> int:
    """The one replica whose counters move when `voice` speaks through the balancer."""
    stub = stub_of(cluster.address)
    before = lookups(cluster)
    assert synthesize(stub, voice) > 0
    moved = [i for i, (a, b) in enumerate(zip(before, lookups(cluster))) if b != a]
    assert len(moved) == 1, f"{voice} was served by replicas {moved}"
    return moved[0]


def test_each_voice_sticks_to_one_replica_and_the_voices_spread(cluster):
    homes = {voice: serving_replica(cluster, voice) for voice in VOICES}
    for voice in VOICES[:3]:
        for _ in range(2):
            assert serving_replica(cluster, voice) == homes[voice]
    assert len(set(homes.values())) >= 2, f"eight voices all hashed to one replica: {homes}"


def test_a_voice_registered_through_the_balancer_speaks_on_every_replica(cluster):
    wav = encode_wav(speechlike_wave(3.0, 16000, f0=240.0, floor=0.05), 16000)
    request = pb.RegisterVoiceRequest(voice_id="herald", reference_wav=wav, transcript="Hear ye, hear ye.")
    stub_of(cluster.address).RegisterVoice(request, metadata=voice_route("herald"), timeout=60)
    started = time.time()
    for r in cluster.replicas:
        eventually(lambda r=r: "herald" in {v.voice_id for v in r.stub.ListVoices(pb.ListVoicesRequest()).voices})
        assert synthesize(r.stub, "herald") > 0  # straight to the replica, not through the balancer
    assert time.time() - started < 5


def test_a_full_replica_refuses_with_a_retry_hint_through_the_balancer(cluster):
    home = cluster.replicas[serving_replica(cluster, VOICES[0])]
    held = []  # open conversations straight to that replica fill its --max-sessions 4
    for _ in range(4):
        q: Queue = Queue()
        q.put(pb.ConverseRequest(config=pb.SessionConfig(voice_id=VOICES[0], sample_rate_hz=16000)))
        call = home.stub.Converse(iter(q.get, None), timeout=60)
        next(call)  # SessionStarted
        held.append((q, call))
    try:
        with pytest.raises(grpc.RpcError) as refused:
            synthesize(stub_of(cluster.address), VOICES[0])
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry-after-ms" in dict(refused.value.trailing_metadata() or ())
    finally:
        for q, call in held:
            q.put(None)
            call.cancel()
    eventually(lambda: home.stats().open_streams == 0)


def converse(stub: pb_grpc.NpcVoiceStub, voice: str) -> tuple[Queue, grpc.Call]:
    q: Queue = Queue()
    q.put(pb.ConverseRequest(config=pb.SessionConfig(voice_id=voice, sample_rate_hz=16000)))
    call = stub.Converse(iter(q.get, None), metadata=voice_route(voice), timeout=60)  # a failure must not hang
    assert next(call).WhichOneof("kind") == "started"
    return q, call


def first_audio(q: Queue, call, text: str) -> None:
    q.put(pb.ConverseRequest(text=pb.TextFragment(text=text, turn_id="t0")))
    q.put(pb.ConverseRequest(flush=pb.Flush(turn_id="t0")))
    for resp in call:
        if resp.WhichOneof("kind") == "audio":
            return
    raise AssertionError("the turn ended without audio")


def read_turn(call) -> set[str]:
    """The kinds of response up to the turn's FlushDone."""
    kinds = set()
    for resp in call:
        kinds.add(resp.WhichOneof("kind"))
        if "flush_done" in kinds:
            return kinds
    raise AssertionError(f"the stream ended before the turn did: {kinds}")


def move_check(stub: pb_grpc.NpcVoiceStub, voice: str):
    """True once `voice` speaks through the balancer again."""

    def spoken() -> bool:
        try:
            return synthesize(stub, voice) > 0
        except grpc.RpcError:
            return False

    return spoken


def test_a_draining_replica_finishes_the_turn_then_its_voices_move(cluster):
    """SIGTERM, as a rolling deploy or a scale-in sends it: the conversation's turn in
    progress completes, the stream then ends with UNAVAILABLE (the client reconnects), and
    once the replica has exited the balancer sends the voice elsewhere."""
    stub = stub_of(cluster.address)
    home = serving_replica(cluster, VOICES[1])
    q, call = converse(stub, VOICES[1])
    first_audio(q, call, " ".join([LINE] * 3))
    cluster.replicas[home].proc.terminate()
    assert "flush_done" in read_turn(call)
    with pytest.raises(grpc.RpcError) as ended:
        next(call)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    q.put(None)
    eventually(move_check(stub, VOICES[1]), timeout=10)
    assert serving_replica(cluster, VOICES[1]) != home
    assert cluster.replicas[home].proc.wait(30) == 0  # the drain ends in a clean exit (the next test counts on it)


def test_killing_a_replica_mid_conversation_fails_only_its_streams_and_its_voices_move(cluster):
    live = [i for i, r in enumerate(cluster.replicas) if r.proc.poll() is None]
    homes: dict[str, int] = {}

    def spread() -> bool:
        # nginx counts one failed connection as a replica down for fail_timeout (5 s): right
        # after the drain, a loaded machine may still route every voice to one survivor.
        homes.update({voice: serving_replica(cluster, voice) for voice in VOICES})
        return len(set(homes.values())) == 2

    eventually(spread, timeout=20)
    victim = homes[VOICES[0]]
    survivor_voice = next(v for v in VOICES if homes[v] != victim)
    assert len(live) == 2 and victim in live
    stub = stub_of(cluster.address)
    doomed_q, doomed = converse(stub, VOICES[0])
    other_q, other = converse(stub, survivor_voice)
    first_audio(doomed_q, doomed, " ".join([LINE] * 6))

    cluster.replicas[victim].proc.kill()
    with pytest.raises(grpc.RpcError) as ended:
        for _ in doomed:
            pass
    # A dead replica sends no gRPC status, and the balancer cannot make one up mid-stream:
    # nginx resets the client's stream (RST_STREAM INTERNAL_ERROR), which grpc reports as
    # INTERNAL. A client treats a reset stream as a lost connection, as it treats
    # UNAVAILABLE (docs/scaling.md).
    assert ended.value.code() == grpc.StatusCode.INTERNAL and "RST_STREAM" in ended.value.details()

    first_audio(other_q, other, LINE)  # the other conversation carries on
    assert "flush_done" in read_turn(other)
    other_q.put(None)

    # The victim refuses connections now: nginx takes the next replica on the ring at once.
    eventually(move_check(stub, VOICES[0]), timeout=10)
    assert serving_replica(cluster, VOICES[0]) != victim


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_the_documented_haproxy_configuration_parses():
    done = subprocess.run(["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_scale_out_sweep_runs_and_reports_every_point(model_dir, tmp_path):
    """A small version of `python -m loadtest.scaleout` (the toy model, 1 and 2 replicas),
    so the script the documented figures come from keeps working."""
    from loadtest.scaleout import main

    server_args = f"--model {model_dir} --kv-cache-mb 16 --voice-adapt-steps 0 --no-demo-voices"
    args = ["--replicas", "1,2", "--per-replica", "1", "--duration", "8", "--voices", "4", "--json"]
    assert main([*args, "--server-args", server_args, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "scaleout.json").read_text())
    assert [p["users"] for p in summary["points"]["1"]] == [1] and [p["users"] for p in summary["points"]["2"]] == [2]
    for points in summary["points"].values():
        assert points[0]["turns"] > 0 and points[0]["cache_hit_ratio"] is not None
    assert (tmp_path / "scaleout.png").stat().st_size > 10_000 and "| 2 | 2 |" in (tmp_path / "scaleout.md").read_text()
