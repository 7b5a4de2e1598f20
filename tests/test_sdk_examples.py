"""The client examples, built and run here against a real server on loopback.

The C++ client needs cmake + gRPC C++ (Debian: libgrpc++-dev protobuf-compiler-grpc);
the Unity logic needs mono's mcs. `.ci/run` installs both, so CI does not skip.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile


ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk_examples"


def test_python_client_converses_barks_and_registers(server, tmp_path):
    client = [sys.executable, str(SDK / "python" / "npc_client.py"), "--server", server.address]
    out = tmp_path / "reply.wav"
    done = subprocess.run(client + ["converse", "--barge-in", "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cancelled turn-0" in done.stdout and "finished turn-1" in done.stdout
    audio, rate = soundfile.read(out)
    assert rate == 48000 and len(audio) > 4800
    bark = subprocess.run(client + ["bark", "Over here!", "--out", str(tmp_path / "bark.wav")],
                          capture_output=True, text=True, timeout=60)
    assert bark.returncode == 0 and "wrote" in bark.stdout, bark.stderr
    missing = subprocess.run(client + ["bark", "Hi.", "--voice", "ghost"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "NOT_FOUND" in missing.stderr


def _missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


@pytest.fixture(scope="module")
def cpp_demo(tmp_path_factory) -> Path:
    missing = _missing("cmake", "c++", "protoc", "grpc_cpp_plugin", "pkg-config")
    if missing or subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"]).returncode != 0:
        pytest.skip(f"C++ toolchain missing ({', '.join(missing) or 'grpc++ pkg-config'}); "
                    "apt-get install cmake g++ pkg-config libgrpc++-dev protobuf-compiler-grpc")
    build = tmp_path_factory.mktemp("cpp-build")
    for cmd in (["cmake", "-S", str(SDK / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", str(build), "-j2"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build / "npc_voice_demo"


def test_cpp_client_streams_barges_in_and_continues(cpp_demo, server):
    done = subprocess.run([str(cpp_demo), "--server", server.address, "--voice", "merchant"],
                          capture_output=True, text=True, timeout=180)
    line = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout + done.stderr
    result = dict(re.findall(r"(\w+)=(-?[\d.]+)", line))
    assert result["status"] == "0" and result["cancel_acked"] == "1" and result["turn2_flushed"] == "1"
    assert float(result["ttfa_ms"]) > 0 and float(result["cancel_ms"]) > 0
    assert int(result["samples"]) > int(result["turn1_samples"]) >= 48000  # turn 2 spoke after the barge-in
    assert int(result["dropped"]) == 0 and int(result["played"]) > 0
    assert int(result["underruns"]) >= 0  # reported; the load test is where underruns are judged


def test_cpp_client_reports_a_bad_voice(cpp_demo, server):
    done = subprocess.run([str(cpp_demo), "--server", server.address, "--voice", "ghost"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "status=5" in done.stdout  # NOT_FOUND


def test_unity_logic_compiles_and_passes_with_mono(tmp_path):
    missing = _missing("mcs", "mono")
    if missing:
        pytest.skip(f"mono missing ({', '.join(missing)}); apt-get install mono-mcs mono-runtime")
    unity = SDK / "unity"
    exe = tmp_path / "logic_tests.exe"
    sources = [str(unity / "Runtime" / f) for f in ("PcmRingBuffer.cs", "Pcm16.cs", "StreamResampler.cs",
                                                    "VisemeMapper.cs")] + [str(unity / "Tests" / "LogicTests.cs")]
    built = subprocess.run(["mcs", "-langversion:experimental", f"-out:{exe}", *sources], capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    ran = subprocess.run(["mono", str(exe)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "ALL PASSED" in ran.stdout, ran.stdout + ran.stderr
