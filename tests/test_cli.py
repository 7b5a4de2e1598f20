"""The CLI as a user runs it: `serve` in a subprocess, then `say` and `voices` against it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import soundfile

from engine.audio import speechlike_wave
from service.audio_input import encode_wav


def cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, timeout=timeout)


def test_serve_say_and_voices(model_dir, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--port",
            "0",
            "--model",
            str(model_dir),
            "--voices-dir",
            str(tmp_path / "voices"),
            "--kv-cache-mb",
            "32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"serving on 127\.0\.0\.1:(\d+)", line):
                address = f"127.0.0.1:{m[1]}"
                break
        else:
            raise AssertionError("server never came up:\n" + "".join(lines))
        out = tmp_path / "line.wav"
        said = cli(
            "say",
            "Halt! Who goes there?",
            "--voice",
            "guard",
            "--out",
            str(out),
            "--rate",
            "16000",
            "--server",
            address,
        )
        assert said.returncode == 0, said.stderr
        assert re.search(r"time to first audio \d+ ms", said.stdout)
        audio, rate = soundfile.read(out)
        assert rate == 16000 and len(audio) > 1600

        listed = cli("voices", "--server", address, "list")
        assert listed.returncode == 0 and all(v in listed.stdout for v in ("guard", "merchant", "sprite"))
        ref = tmp_path / "ref.wav"
        ref.write_bytes(encode_wav(speechlike_wave(4.0, 16000, f0=200.0, floor=0.05), 16000))
        added = cli("voices", "--server", address, "add", "bard", str(ref), "A song for the road.")
        assert added.returncode == 0 and "registered bard" in added.stdout
        assert "prefilled" in cli("voices", "--server", address, "warm", "bard").stdout
        assert cli("voices", "--server", address, "rm", "bard").returncode == 0
        missing = cli("voices", "--server", address, "rm", "bard")
        assert missing.returncode != 0 and "NOT_FOUND" in missing.stderr
        bad = cli("say", "Hi.", "--voice", "nobody", "--server", address, "--out", str(out))
        assert bad.returncode != 0 and "NOT_FOUND" in bad.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_serve_refuses_other_machines_without_keys_and_the_cli_sends_a_key(model_dir, tmp_path):
    refused = cli("serve", "--host", "0.0.0.0", "--port", "0", "--model", str(model_dir), timeout=60)
    assert refused.returncode != 0 and "no authentication" in refused.stderr
    from service.cli import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("game.example")
    keys = tmp_path / "keys.json"
    made = cli("keys", str(keys), "ops", "--roles", "speak,admin")
    assert made.returncode == 0 and "npv_" in made.stdout
    token = made.stdout.strip().splitlines()[-1]
    assert token not in keys.read_text()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", "0", "--model", str(model_dir), "--keys", str(keys),
         "--voices-dir", str(tmp_path / "voices"), "--kv-cache-mb", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if m := re.search(r"serving on 127\.0\.0\.1:(\d+)", line):
                address = f"127.0.0.1:{m[1]}"
                break
        listed = cli("voices", "--server", address, "--api-key", token, "list")
        assert listed.returncode == 0 and "guard" in listed.stdout
        anonymous = cli("voices", "--server", address, "list")
        assert anonymous.returncode != 0 and "UNAUTHENTICATED" in anonymous.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_serve_refuses_settings_that_could_never_work_with_a_one_line_error(model_dir):
    """A batch of 0 streams would leave every utterance waiting forever, and a negative raise
    time means nothing: serve says so and exits before it loads the model, rather than hanging
    or printing a traceback."""
    refused = cli("serve", "--port", "0", "--model", str(model_dir), "--max-batch", "0")
    assert refused.returncode != 0
    assert "error: max_running must be at least 1" in refused.stderr and "Traceback" not in refused.stderr
    refused = cli("serve", "--port", "0", "--model", str(model_dir), "--limit-raise-s", "-1")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "error: limit_raise_s (serve --limit-raise-s) must be 0 or more, got -1" in refused.stderr
