"""Prometheus metrics (`serve --metrics-port`), with prometheus-client.

Each server has its own registry (tests run several servers in one process). Counts the
service makes itself (RPCs, utterances, time to first audio, lateness, RTF) are recorded
as they happen; the engine's and the voice library's state (queue, batch, KV blocks,
prefix cache, registrations) is read at scrape time, so a scrape never waits on the
engine thread and nothing is copied between scrapes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

NS = "npc_voice"


class _Live:
    """Values read when Prometheus scrapes."""

    def __init__(self, read: Callable[[], dict]):
        self.read = read

    def collect(self):
        v = self.read()
        gauges = {
            "open_streams": ("Converse and Synthesize streams open", v["open_streams"]),
            "session_limit": (
                "streams admitted at once now (max_sessions, lower after listeners ran dry)",
                v["session_limit"],
            ),
            "engine_waiting": ("utterances queued for the engine", v["waiting"]),
            "engine_running": ("utterances in the running batch", v["running"]),
            "kv_blocks_free": ("KV blocks free (cached but unreferenced included)", v["kv_free"]),
            "kv_blocks_total": ("KV blocks in the pool", v["kv_total"]),
            "registrations_pending": ("voice registrations waiting or running", v["registrations"]),
            "voices_loaded": ("voices this replica can speak", v["voices"]),
            "voice_store_down": ("1 while the shared voice store cannot be reached", v["store_down"]),
            "engine_busy": ("share of time the engine thread works (smoothed)", v["engine_busy"]),
            "audio_busy": ("share of time the audio thread decodes (smoothed)", v["audio_busy"]),
            "headroom_seconds": (
                "least slack of a chunk a stream waited for, over the admission window (+Inf: none waited)",
                v["headroom"],
            ),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(f"{NS}_{name}", doc, value=value)
        counters = {
            "session_limit_cuts": ("times listeners running dry again lowered the session limit", v["limit_cuts"]),
            "prefix_hits": ("KV blocks reused from the prefix cache", v["hits"]),
            "prefix_misses": ("KV blocks looked up and not found", v["misses"]),
            "prefix_evictions": ("cached KV blocks evicted", v["evictions"]),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(f"{NS}_{name}", doc, value=value)


class Metrics:
    def __init__(self, read_live: Callable[[], dict]):
        self.registry = CollectorRegistry()
        self.rpcs = Counter(f"{NS}_rpcs", "RPCs by method and status", ["method", "code"], registry=self.registry)
        self.utterances = Counter(f"{NS}_utterances", "utterances by finish reason", ["reason"], registry=self.registry)
        # Seconds; the buckets bracket what a player notices (first audio) and hears (a gap).
        self.ttfa = Histogram(
            f"{NS}_ttfa_seconds",
            "time from an utterance's text being complete to its first audio",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self.lateness = Histogram(
            f"{NS}_chunk_lateness_seconds",
            "how late each audio chunk left against the listener's real-time playback of its turn",
            buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
            registry=self.registry,
        )
        self.start_hold = Histogram(
            f"{NS}_start_hold_seconds",
            "how long a new stream waited for its start (start_hold_s) before SessionStarted",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
            registry=self.registry,
        )
        self.rtf = Histogram(
            f"{NS}_real_time_factor",
            "generation wall time over audio time, per utterance",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
            registry=self.registry,
        )
        self.registry.register(_Live(read_live))

    def serve(self, host: str, port: int, ready: Callable[[], bool]) -> int:
        """Serve /metrics, and /ready (200, or 503 while draining) for load balancers that
        cannot send a gRPC health check (HAProxy), over HTTP on a thread. Returns the bound
        port (0 picks one)."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    status, kind, body = 200, CONTENT_TYPE_LATEST, generate_latest(registry)
                elif path == "/ready":
                    up = ready()
                    status, kind, body = (200 if up else 503), "text/plain", b"ready\n" if up else b"draining\n"
                else:
                    status, kind, body = 404, "text/plain", b"/metrics or /ready\n"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # a scrape or a probe every few seconds is not news
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server.server_port
