"""The shared audio thread: windows from many streams, decoded in batches, each
returned to its own caller exactly as a lone decode would make it."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from engine.codecs.mel import MelCodec
from engine.codecs.parametric import ParametricCodec
from engine.models import SHIPPED_MODEL_DIR
from engine.packed import can_pack
from engine.runtime.audio_worker import AudioWorker


class Recording:
    """A real codec that records each batched call and can hold the first one back."""

    def __init__(self, codec, fail_length: int | None = None):
        self.codec, self.fail_length = codec, fail_length
        self.per_row_adapters = getattr(codec, "per_row_adapters", False)
        self.calls: list[tuple[int, int]] = []  # (windows, frames) per call
        self.threads: list[int] = []  # torch's CPU thread count in each call
        self.hold = threading.Event()
        self.holding = threading.Event()

    def decode(self, codes, adapter=None):
        return self.codec.decode(codes, adapter)

    def decode_batch(self, codes, adapter=None):
        if not self.calls:
            self.holding.set()
            self.hold.wait(10)
        voices = () if adapter is None else ("per row",) if isinstance(adapter, list) else ("one",)
        self.calls.append((codes.shape[0], codes.shape[1]) + voices)
        self.threads.append(torch.get_num_threads())
        if codes.shape[1] == self.fail_length:
            raise RuntimeError("this window length fails")
        return self.codec.decode_batch(codes, adapter)


@pytest.fixture(scope="module")
def mel_codec():
    if not (SHIPPED_MODEL_DIR / "codec.safetensors").exists():
        pytest.skip("no trained codec in engine/checkpoints/default")
    return MelCodec(SHIPPED_MODEL_DIR, packed=torch.float32 if can_pack(torch.device("cpu"), torch.float32) else None)


def windows(codec, lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, codec.codebook_size, (n, codec.num_codebooks), generator=gen) for n in lengths]


def decode_concurrently(
    worker: AudioWorker, codec: Recording, jobs: list[torch.Tensor], adapters: list | None = None
) -> list:
    """Decode jobs[0] first and hold it in the codec until the rest are queued, so what
    gets batched together does not depend on thread timing. adapters[i]: job i's voice adapter."""
    results: list = [None] * len(jobs)
    adapters = adapters or [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = worker.decode(jobs[i], adapters[i])
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    assert codec.holding.wait(10)
    threads += [threading.Thread(target=run, args=(i,)) for i in range(1, len(jobs))]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while worker.queued < len(jobs) - 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    codec.hold.set()
    for t in threads:
        t.join(10)
    return results


def test_windows_of_many_streams_batch_by_length_shortest_first_and_match_lone_decodes(mel_codec):
    codec = Recording(mel_codec)
    worker = AudioWorker(codec, max_batch=4)
    lengths = [10, 10, 3, 10, 5, 10, 3, 10, 10, 5, 10, 10]
    jobs = windows(mel_codec, lengths)
    try:
        results = decode_concurrently(worker, codec, jobs)
    finally:
        worker.close()
    for codes, wave in zip(jobs, results):
        assert torch.equal(wave, mel_codec.decode(codes)), len(codes)  # the batch changes no bit
    # The held first window alone; then the 11 queued ones: 2 of length 3, 2 of 5, and
    # 7 of 10 split into batches of at most 4, shortest first.
    assert codec.calls == [(1, 10), (2, 3), (2, 5), (4, 10), (3, 10)]
    assert (worker.batches, worker.windows) == (5, 12)


def test_a_short_window_queued_during_a_call_goes_before_longer_ones_queued_earlier(mel_codec):
    """The worker makes one call, then chooses again among everything queued: a new stream's
    3-frame chunk that arrives while a batch of long windows decodes waits for that call only,
    not for the long window left over from before it came."""
    short = windows(mel_codec, [3], seed=1)[0]
    late: dict = {}

    class ShortArrivesDuringSecondCall(Recording):
        def decode_batch(self, codes, adapter=None):
            if len(self.calls) == 1:  # the second call: a short window comes in meanwhile
                late["thread"] = threading.Thread(target=lambda: late.setdefault("wave", worker.decode(short)))
                late["thread"].start()
                deadline = time.monotonic() + 10
                while worker.queued < 2 and time.monotonic() < deadline:
                    time.sleep(0.001)
            return super().decode_batch(codes, adapter)

    codec = ShortArrivesDuringSecondCall(mel_codec)
    worker = AudioWorker(codec, max_batch=4)
    jobs = windows(mel_codec, [10] * 6)
    try:
        results = decode_concurrently(worker, codec, jobs)
        late["thread"].join(10)
    finally:
        worker.close()
    assert codec.calls == [(1, 10), (4, 10), (1, 3), (1, 10)]
    assert torch.equal(late["wave"], mel_codec.decode(short))
    assert all(torch.equal(w, mel_codec.decode(c)) for c, w in zip(jobs, results))


def test_small_calls_decode_on_one_thread_and_large_ones_on_every_thread_given(mel_codec):
    """A new stream's first window or two on one thread (time to first audio), the rest on the
    worker's threads, whatever count other threads set meanwhile (torch's count is per thread,
    and a thread's first call would otherwise take the last count anyone set)."""
    codec = Recording(mel_codec)
    before = torch.get_num_threads()
    try:
        worker = AudioWorker(codec, max_batch=4, num_threads=2)
        torch.set_num_threads(3)  # another thread's count, set after the worker started
        try:
            decode_concurrently(worker, codec, windows(mel_codec, [10, 1, 10, 2]))
        finally:
            worker.close()
    finally:
        torch.set_num_threads(before)
    assert codec.calls == [(1, 10), (1, 1), (1, 2), (1, 10)]
    assert codec.threads == [2, 1, 1, 2]


def test_windows_of_different_voices_share_a_call_each_through_its_own_adapter(mel_codec):
    """Windows of equal length batch whatever their voices: the queued ones go in one call, each
    row through its own voice's adapter, and come back exactly as that window decoded alone on
    the same path (and within float rounding of the codec holding its voice's adapter)."""
    base = {k: v.clone() for k, v in mel_codec._base.items()}
    gen = torch.Generator().manual_seed(1)
    voices = [None] + [{k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in base.items()} for _ in range(2)]
    codec = Recording(mel_codec)
    worker = AudioWorker(codec, max_batch=8)
    order = [0, 1, 2, 1, 0, 2, 1]  # the voice of each window, interleaved as streams would queue them
    jobs = windows(mel_codec, [6] * len(order), seed=3)
    try:
        results = decode_concurrently(worker, codec, jobs, [voices[v] for v in order])
    finally:
        worker.close()
    assert codec.calls == [(1, 6), (6, 6, "per row")]  # the held one, then the rest together
    assert torch.equal(results[0], mel_codec.decode(jobs[0]))
    for codes, v, wave in zip(jobs[1:], order[1:], results[1:]):
        assert torch.equal(wave, mel_codec.decode_batch(codes[None], [voices[v]])[0]), v
        assert torch.allclose(wave, mel_codec.decode(codes, voices[v]), atol=1e-4), v
    # The adapters change the audio, and the unadapted voice is the codec as shipped.
    assert not torch.allclose(results[4], mel_codec.decode(jobs[4], voices[1]), atol=1e-3)


def test_a_failing_call_fails_only_its_own_windows():
    codec = Recording(ParametricCodec(), fail_length=7)
    worker = AudioWorker(codec)
    jobs = windows(codec.codec, [4, 7, 4, 7, 9])
    try:
        results = decode_concurrently(worker, codec, jobs)
        again = worker.decode(jobs[0])  # and the thread goes on serving
    finally:
        worker.close()
    assert [isinstance(r, RuntimeError) for r in results] == [False, True, False, True, False]
    for codes, wave in zip(jobs, results):
        if not isinstance(wave, Exception):
            assert torch.equal(wave, codec.codec.decode(codes))
    assert torch.equal(again, results[0])


def test_after_close_callers_decode_on_their_own_thread():
    codec = ParametricCodec()
    worker = AudioWorker(codec)
    worker.close()
    (codes,) = windows(codec, [6])
    assert torch.equal(worker.decode(codes), codec.decode(codes))
    assert worker.batches == 0


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="max_batch"):
        AudioWorker(ParametricCodec(), max_batch=0)
