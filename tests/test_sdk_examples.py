"""The client examples, built and run here against a real server on loopback.

The C++ client needs cmake + gRPC C++ (Debian: libgrpc++-dev protobuf-compiler-grpc);
the Unity logic needs mono's mcs. `.ci/run` installs both, so CI does not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile

from service.gen import npc_voice_pb2 as pb
from tests.support import ServerThread, make_engine

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk_examples"


def test_python_client_converses_barks_and_registers(server, tmp_path):
    client = [sys.executable, str(SDK / "python" / "npc_client.py"), "--server", server.address]
    out = tmp_path / "reply.wav"
    done = subprocess.run(
        client + ["converse", "--barge-in", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "cancelled turn-0" in done.stdout and "finished turn-1" in done.stdout
    audio, rate = soundfile.read(out)
    assert rate == 48000 and len(audio) > 4800
    bark = subprocess.run(
        client + ["bark", "Over here!", "--out", str(tmp_path / "bark.wav")], capture_output=True, text=True, timeout=60
    )
    assert bark.returncode == 0 and "wrote" in bark.stdout, bark.stderr
    missing = subprocess.run(client + ["bark", "Hi.", "--voice", "ghost"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "NOT_FOUND" in missing.stderr


def _missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


@pytest.fixture(scope="module")
def cpp_demo(tmp_path_factory) -> Path:
    missing = _missing("cmake", "c++", "protoc", "grpc_cpp_plugin", "pkg-config")
    if missing or subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"]).returncode != 0:
        pytest.skip(
            f"C++ toolchain missing ({', '.join(missing) or 'grpc++ pkg-config'}); "
            "apt-get install cmake g++ pkg-config libgrpc++-dev protobuf-compiler-grpc"
        )
    build = tmp_path_factory.mktemp("cpp-build")
    for cmd in (
        ["cmake", "-S", str(SDK / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", str(build), "-j2"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build / "npc_voice_demo"


RESULT_FIELDS = {
    "status",
    "ttfa_ms",
    "cancel_ms",
    "cancel_acked",
    "turn2_flushed",
    "turn1_samples",
    "samples",
    "played",
    "dropped",
    "underruns",
    "words",
}


def run_cpp_demo(cpp_demo, server) -> dict[str, str]:
    """Runs the demo's two turns (the first cut by a barge-in) and checks that the figures
    of its RESULT line add up; returns them."""
    started = time.monotonic()
    done = subprocess.run(
        [str(cpp_demo), "--server", server.address, "--voice", "merchant"], capture_output=True, text=True, timeout=180
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    line = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout + done.stderr
    result = dict(re.findall(r"(\w+)=(-?[\d.]+)", line))
    assert set(result) == RESULT_FIELDS, line
    assert result["status"] == "0" and result["cancel_acked"] == "1" and result["turn2_flushed"] == "1"
    assert 0 < float(result["ttfa_ms"]) < elapsed_ms and 0 < float(result["cancel_ms"]) < elapsed_ms
    rate, turn1, samples, played = 48000, int(result["turn1_samples"]), int(result["samples"]), int(result["played"])
    assert samples > turn1 >= rate  # turn 2 spoke after the barge-in
    assert int(result["dropped"]) == 0
    # The audio thread played all of turn 2 and, before the barge-in cleared it, at most
    # what had arrived of turn 1; in real time, so never more than the run lasted.
    assert samples - turn1 <= played <= samples and played / rate * 1000 < elapsed_ms, line
    # Underruns are dry spells counted once each: a plain count, and each one after the
    # first of a turn needs a full 10 ms block played before it.
    assert re.fullmatch(r"\d+", result["underruns"]) and int(result["underruns"]) <= played // (rate // 100) + 2, line
    # Word marks only come from a model with timings; this server's has none.
    timings = server.stub.GetCapabilities(pb.GetCapabilitiesRequest()).timings_available
    assert re.fullmatch(r"\d+", result["words"]) and (int(result["words"]) > 0) == timings, line
    return result


def test_cpp_client_streams_barges_in_and_continues(cpp_demo, server):
    run_cpp_demo(cpp_demo, server)  # underruns are only bounded here: the load test judges them


def test_cpp_client_counts_the_underruns_of_a_server_slower_than_real_time(cpp_demo, model_dir, tmp_path):
    """Every model step waits 1.5 frames, so audio arrives at 2/3 of real time: the demo's
    audio thread runs dry, and must say so."""
    eng = make_engine(model_dir)
    forward, frame_s = eng.runner.forward, 1 / eng.codec.frame_rate

    def slow_forward(items):
        time.sleep(1.5 * frame_s)
        return forward(items)

    eng.runner.forward = slow_forward
    srv = ServerThread(eng, tmp_path / "voices")
    try:
        assert int(run_cpp_demo(cpp_demo, srv)["underruns"]) >= 1
    finally:
        srv.stop()
        eng.close()


def test_cpp_client_sends_its_api_key(cpp_demo, model_dir, tmp_path):
    from service.auth import Keys, add_key

    token = add_key(tmp_path / "keys.json", "game", ["speak"])
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices", keys=Keys(tmp_path / "keys.json"))
    try:
        demo = [str(cpp_demo), "--server", srv.address, "--voice", "merchant"]
        ok = subprocess.run(demo + ["--api-key", token], capture_output=True, text=True, timeout=180)
        assert ok.returncode == 0 and "status=0" in ok.stdout, ok.stdout + ok.stderr
        anonymous = subprocess.run(demo, capture_output=True, text=True, timeout=60)
        assert anonymous.returncode == 1 and "status=16" in anonymous.stdout  # UNAUTHENTICATED
    finally:
        srv.stop()
        eng.close()


def test_cpp_client_reports_a_bad_voice(cpp_demo, server):
    done = subprocess.run(
        [str(cpp_demo), "--server", server.address, "--voice", "ghost"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "status=5" in done.stdout  # NOT_FOUND


def test_unity_logic_compiles_and_passes_with_mono(tmp_path):
    missing = _missing("mcs", "mono")
    if missing:
        pytest.skip(f"mono missing ({', '.join(missing)}); apt-get install mono-mcs mono-runtime")
    unity = SDK / "unity"
    exe = tmp_path / "logic_tests.exe"
    sources = [
        str(unity / "Runtime" / f) for f in ("PcmRingBuffer.cs", "Pcm16.cs", "StreamResampler.cs", "VisemeMapper.cs")
    ] + [str(unity / "Tests" / "LogicTests.cs")]
    built = subprocess.run(
        ["mcs", "-langversion:experimental", f"-out:{exe}", *sources], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stdout + built.stderr
    ran = subprocess.run(["mono", str(exe)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "ALL PASSED" in ran.stdout, ran.stdout + ran.stderr


def test_python_client_sends_its_api_key(model_dir, tmp_path):
    from service.auth import Keys, add_key

    token = add_key(tmp_path / "keys.json", "game", ["speak"])
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices", keys=Keys(tmp_path / "keys.json"))
    try:
        client = [sys.executable, str(SDK / "python" / "npc_client.py"), "--server", srv.address]
        bark = client + ["bark", "Over here!", "--out", str(tmp_path / "bark.wav")]
        ok = subprocess.run(bark[:4] + ["--api-key", token] + bark[4:], capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and "wrote" in ok.stdout, ok.stderr
        anonymous = subprocess.run(bark, capture_output=True, text=True, timeout=60)
        assert anonymous.returncode != 0 and "UNAUTHENTICATED" in anonymous.stderr
    finally:
        srv.stop()
        eng.close()
