"""The audio worker in a child process: the same bits as the codec decoding here, batched
across streams and voice adapters; a failure or death of the process ends only the windows it
held, and later windows still get audio."""

from __future__ import annotations

import time
from functools import partial

import pytest
import torch

from engine import Engine
from engine.codecs.base import make_codec
from engine.config import CacheConfig, EngineConfig, SamplingParams, StreamConfig
from engine.models import SHIPPED_MODEL_DIR
from engine.packed import can_pack
from engine.runtime.audio_process import AudioProcess
from engine.runtime.outputs import AudioChunk
from tests.support import concurrently


@pytest.fixture(scope="module")
def mel():
    if not (SHIPPED_MODEL_DIR / "codec.safetensors").exists():
        pytest.skip("no trained codec in engine/checkpoints/default")
    # (on packed kernels, as the engine decodes: a row's bits do not depend on its batch there)
    packed = torch.float32 if can_pack(torch.device("cpu"), torch.float32) else None
    factory = partial(make_codec, "mel", 25.0, SHIPPED_MODEL_DIR, packed=packed)
    worker = AudioProcess(factory(), factory, max_batch=4)
    yield worker
    worker.close()


def adapter_like(codec, scale: float) -> dict[str, torch.Tensor]:
    """A voice adapter: the codec's own one-dimensional values, moved."""
    return {k: v * scale + 0.01 for k, v in codec._base.items()}


def test_windows_of_many_streams_and_voices_decode_to_the_same_bits_as_here(mel):
    codec = mel.codec
    gen = torch.Generator().manual_seed(0)
    voices = [None, adapter_like(codec, 1.1), adapter_like(codec, 0.9)]
    jobs = [
        (torch.randn(n, codec.latent_dim, generator=gen), voices[i % 3]) for i, n in enumerate([5, 5, 5, 8, 5, 8, 3])
    ]
    batches = mel.batches
    got = concurrently(lambda i: mel.decode(*jobs[i]), len(jobs))  # as streams send them
    for (window, adapter), wave in zip(jobs, got):
        # Its voice's alone, or per row when its call also held other voices' windows (audio_worker.adapter_arg).
        lone = [codec.decode_batch(window[None], a)[0] for a in (adapter, [adapter])]
        assert torch.equal(wave, lone[0]) or torch.equal(wave, lone[1])
        assert torch.allclose(lone[0], lone[1], atol=1e-4)
    assert mel.windows >= len(jobs) and mel.batches > batches
    assert mel.queued == 0
    deadline = time.monotonic() + 10  # (the child reports its busy time after the waves)
    while mel.busy.read() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mel.busy.read() > 0


def test_a_failed_batch_fails_only_its_windows_and_the_next_ones_decode(mel):
    codec = mel.codec
    window = torch.randn(4, codec.latent_dim, generator=torch.Generator().manual_seed(1))
    mel.inject_fault()
    with pytest.raises(RuntimeError, match="injected fault"):
        mel.decode(window)
    assert torch.equal(mel.decode(window), codec.decode_batch(window[None])[0])


def test_once_the_process_is_killed_callers_decode_on_their_own_threads():
    factory = partial(make_codec, "parametric", 25.0)
    worker = AudioProcess(factory(), factory)
    codes = torch.randint(0, worker.codec.codebook_size, (4, worker.codec.num_codebooks))
    try:
        assert torch.equal(worker.decode(codes), worker.codec.decode(codes))
        worker.kill()
        assert worker.queued == 0
        assert torch.equal(worker.decode(codes), worker.codec.decode(codes))  # here, not there
    finally:
        worker.close()


def speak(model_dir, audio_process: bool) -> list[bytes]:
    cfg = EngineConfig(
        cache=CacheConfig(block_size=16, num_blocks=256), stream=StreamConfig(audio_process=audio_process)
    )
    engine = Engine(model_dir, cfg)
    try:
        assert type(engine.audio).__name__ == ("AudioProcess" if audio_process else "AudioWorker")
        voice = engine.make_voice(torch.sin(torch.arange(24000) / 9.0) * 0.3, 24000, "A test voice.", "t")
        streams = [
            engine.submit(voice, line, SamplingParams(seed=i, max_frames=30), sample_rate=48000)
            for i, line in enumerate(["Hold the gate.", "Bring me ten wolf pelts."])
        ]
        return [b"".join(e.pcm16() for e in s if isinstance(e, AudioChunk)) for s in streams]
    finally:
        engine.close()


def test_an_engine_with_the_audio_process_streams_the_same_audio_as_with_the_thread(model_dir):
    assert speak(model_dir, audio_process=True) == speak(model_dir, audio_process=False)
