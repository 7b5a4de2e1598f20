"""Locust smoke test: every scenario runs headless for a few seconds against a real server.

It keeps the locustfile from rotting: turns complete, cancels are acknowledged,
no stream errors. Underruns are not asserted on (timing belongs to the report)."""

from __future__ import annotations

import csv

from loadtest.harness import SCENARIOS, run_locust
from loadtest.report import run_lean
from tests.support import ServerThread, make_engine


def test_locust_scenarios_complete_turns_without_failures(model_dir, tmp_path):
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices")
    try:
        run = run_locust(
            srv.address,
            users=len(SCENARIOS),
            seconds=12,
            scenarios=sorted(SCENARIOS),
            out_prefix=tmp_path / "smoke",
            fast=True,
            churn_voices=4,
        )
    finally:
        srv.stop()
        eng.close()
    with open(f"{tmp_path / 'smoke'}_stats.csv") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    with open(f"{tmp_path / 'smoke'}_failures.csv") as f:
        failures = list(csv.DictReader(f))
    # Underruns are timing, judged by the load-test report on a quiet machine, not here
    # (this box also runs pytest and Locust); every other failure is a broken protocol.
    broken = [f for f in failures if f["Name"] != "underrun"]
    assert not broken, run.output[-3000:]
    for scenario in ("conversation", "bark", "barge_in", "churn"):
        assert int(rows[(scenario, "ttfa")]["Request Count"]) >= 1, f"no {scenario} turn reached first audio"
    assert int(rows[("conversation", "utterance")]["Request Count"]) >= 1
    assert int(rows[("barge_in", "cancel")]["Request Count"]) >= 1
    assert {s["name"] for s in run.samples} >= {"ttfa", "utterance", "cancel"}


def test_security_cost_runs_the_same_load_plaintext_and_with_tls_and_keys(model_dir, tmp_path, capsys):
    """Both runs complete turns with no failures: the Locust users really speak TLS and send
    their key (a refused key would show as stream failures)."""
    from loadtest.security_cost import main

    server_args = f"--model {model_dir} --kv-cache-mb 32 --voice-adapt-steps 0"
    result = main(["--users", "2", "--seconds", "20", "--server-args", server_args, "--out", str(tmp_path / "s")])
    for run in ("plaintext", "tls_and_keys"):
        assert result[run]["failures"] == 0 and result[run]["utterances_per_min"] > 0, result
    assert result["ratio"]["utterances_per_min"] is not None


def _drive(address: str, users: int, seconds: float, out) -> dict:
    """The lean driver in its own process, as the capacity report runs it (its CPU is its own)."""
    samples, summary = run_lean(address, users, seconds, out, fast=True)
    return {**summary, "samples": samples}


def test_lean_driver_holds_conversations_and_reports_its_own_cpu(model_dir, tmp_path):
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices")
    try:
        run = _drive(srv.address, 3, 8, tmp_path / "lean")
    finally:
        srv.stop()
        eng.close()
    names = [s["name"] for s in run["samples"]]
    assert "stream" not in names, [s for s in run["samples"] if s["name"] == "stream"]
    assert names.count("ttfa") >= 3 and names.count("utterance") >= 3, run["events"]
    assert {s["user"] for s in run["samples"] if s["name"] == "ttfa"} == {0, 1, 2}
    assert all(s["ms"] >= 0 and s["scenario"] == "conversation" for s in run["samples"])
    assert 8 <= run["wall_s"] < 8 + 15 and 0 < run["cpu_s"] < run["wall_s"], run


def test_lean_driver_counts_refusals_and_waits_the_servers_hint(model_dir, tmp_path):
    """Two open streams allowed, four users: the others are refused with RESOURCE_EXHAUSTED (not a
    stream error) and wait the server's retry-after-ms before they try again."""
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices", max_sessions=2)
    try:
        run = _drive(srv.address, 4, 8, tmp_path / "lean")
    finally:
        srv.stop()
        eng.close()
    refused = [s for s in run["samples"] if s["name"] == "refused"]
    assert refused and all(s["retry_after_ms"] == 1000 and not s["failed"] for s in refused), run["events"]
    assert "stream" not in run["events"], [s.get("error") for s in run["samples"] if s["name"] == "stream"]
    for user in {s["user"] for s in refused}:
        times = [s["t"] for s in refused if s["user"] == user]
        assert all(b - a >= 0.95 for a, b in zip(times, times[1:])), times
    assert len({s["user"] for s in run["samples"] if s["name"] == "ttfa"}) >= 2, run["events"]


def test_locust_users_take_a_refusal_as_admission_and_wait_the_servers_hint(model_dir, tmp_path):
    """The same rule in Locust: RESOURCE_EXHAUSTED is a `refused` event, not a failure, and the
    user waits the hint before it tries again."""
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices", max_sessions=1)
    try:
        run = run_locust(
            srv.address, users=3, seconds=8, scenarios=["conversation"], out_prefix=tmp_path / "r", fast=True
        )
    finally:
        srv.stop()
        eng.close()
    refused = [s for s in run.samples if s["name"] == "refused"]
    assert refused and all(s["retry_after_ms"] == 1000 and not s["failed"] for s in refused), run.output[-2000:]
    assert not [s for s in run.samples if s["failed"] and s["name"] != "underrun"], run.output[-2000:]
    for user in {s["user"] for s in refused}:
        times = [s["t"] for s in refused if s["user"] == user]
        assert all(b - a >= 0.95 for a, b in zip(times, times[1:])), times
    assert any(s["name"] == "ttfa" for s in run.samples)


def test_profile_sorts_raw_stacks_into_pipeline_parts_by_the_most_specific_match(tmp_path):
    from loadtest.profile_server import breakdown, table

    raw = tmp_path / "raw.txt"  # py-spy --format raw: frames joined by ';', then the sample count
    raw.write_text(
        "_loop (engine/runtime/engine.py:440);_run (engine/runtime/engine.py:470);"
        "forward (engine/runtime/model_runner.py:120) 300\n"
        "_loop (engine/runtime/engine.py:440);schedule (engine/runtime/scheduler.py:90) 50\n"
        "_loop (engine/runtime/audio_worker.py:100);decode_batch (engine/codecs/mel.py:245) 200\n"
        "run (service/utterance.py:80);push (engine/runtime/streaming.py:120) 100\n"
        "_run_once (asyncio/base_events.py:1900) 20\n"
        "run (service/utterance.py:80);take (engine/runtime/outputs.py:170);Condition.wait (threading.py:331) 500\n"
        "<module> (somewhere.py:1) 30\n"
    )
    parts = breakdown(raw, rate=100)
    assert parts == {
        "LM forward": 3.0,
        "codec and vocoder": 2.0,
        "resampling, crossfade, PCM": 1.0,
        "engine loop and scheduler": 0.5,
        "other Python": 0.3,
        "gRPC and asyncio": 0.2,
    }
    result = {"users": 8, "parts_core_s": parts, "parts_gil_s": {"LM forward": 1.5}, "python_core_s": 7.0}
    result |= {"gil_s": 1.5, "server_core_s": 9.0, "driver_core_s": 0.4, "machine_core_s": 20.0}
    lines = table([result]).splitlines()
    assert "| LM forward | 3.0 (43%) / 1.5 |" in lines and "| GIL held | 1.5 |" in lines, lines


def test_playback_counts_a_gap_and_what_is_left_to_hear():
    """The judge of every load run: a chunk after the audio before it ran out is an underrun of
    that many ms, and a player's think time starts once the delivered audio has played."""
    from loadtest.scenario import Playback

    playback = Playback()
    assert playback.remaining(0.0) == 0.0
    assert playback.push(10.0, 0.5) == 0.0  # playback starts with the first chunk
    assert playback.push(10.3, 0.5) == 0.0  # in time: 0.2 s still buffered
    assert abs(playback.remaining(10.4) - 0.6) < 1e-9
    assert abs(playback.push(11.25, 0.5) - 250.0) < 1e-6  # ran dry at 11.0: 250 ms late
    assert abs(playback.remaining(11.5) - 0.25) < 1e-9
    assert playback.remaining(12.0) == 0.0


def test_a_point_where_admission_refused_users_does_not_count_as_holding_them():
    from loadtest.report import summarise

    def point(users, underruns=0, refused=0, p95=120.0, admitted=None):
        return {"users": users, "turns": 3 * users, "underruns": underruns, "stream_errors": 0,
                "refused": refused, "ttfa_p95_ms": p95, "admitted_users": admitted or users}  # fmt: skip

    s = summarise([point(8), point(16), point(20, refused=9, admitted=17), point(24, underruns=3, refused=30)])
    assert s["max_realtime_users"] == 16  # 20 users got no underrun, but not all of them got in
    assert s["overload"] == [
        {"users": 20, "admitted_users": 17, "refused": 9, "underruns": 0},
        {"users": 24, "admitted_users": 24, "refused": 30, "underruns": 3},
    ]
    assert summarise([point(8), point(16, underruns=1)])["max_realtime_users"] == 8


def test_a_sweep_goes_on_past_refusals_while_most_users_get_in():
    """A point past capacity where admission refused many calls but let most users in is the
    figure the sweep exists to show; it stops once fewer than half got in, or half ran dry."""
    from loadtest.report import saturated

    base = {"users": 24, "turns": 50, "ttfa_p95_ms": 120.0, "users_with_underruns": 0, "refused": 300}
    assert not saturated({**base, "admitted_users": 16})
    assert saturated({**base, "admitted_users": 11})
    assert saturated({**base, "admitted_users": 24, "users_with_underruns": 13})


def test_lean_driver_cuts_a_turn_still_open_after_the_run_and_its_grace(monkeypatch):
    """A server that starts every session and then never speaks: each user's turn is cut once
    the run and GRACE_S are over, as a `cut` event (not a failure, not a crash of the run)."""
    import asyncio

    import grpc

    from loadtest import driver
    from service.gen import npc_voice_pb2 as pb
    from service.gen import npc_voice_pb2_grpc as pb_grpc

    class Silent(pb_grpc.NpcVoiceServicer):
        async def WarmVoice(self, request, context):
            return pb.WarmVoiceResponse()

        async def Converse(self, requests, context):
            async for request in requests:
                if request.HasField("config"):
                    yield pb.ConverseResponse(started=pb.SessionStarted())

    async def run():
        server = grpc.aio.server()
        pb_grpc.add_NpcVoiceServicer_to_server(Silent(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await driver.drive(f"127.0.0.1:{port}", 2, 0.5, fast=True, seed=1, ramp_s=0)
        finally:
            await server.stop(0)

    monkeypatch.setattr(driver, "GRACE_S", 0.0)
    samples, summary = asyncio.run(run())
    assert summary["events"] == {"cut": 2}, summary
    assert all(not row["failed"] for row in samples.rows)
    assert summary["wall_s"] < 5, summary
