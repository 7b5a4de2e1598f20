"""Streaming audio out: click-free chunk borders, exact streaming resampling, chunk schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from engine.codecs.parametric import ParametricCodec
from engine.config import StreamConfig
from engine.runtime.streaming import AudioStreamer, ChunkDecoder, StreamingResampler
from tests.support import speech_like

CODEC = ParametricCodec()
SPF = CODEC.samples_per_frame


def stream_decode(decoder: ChunkDecoder, codes: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, list[int]]:
    parts, borders, i = [], [], 0
    for n in sizes:
        parts.append(decoder.push(codes[i : i + n]))
        i += n
        borders.append(sum(len(p) for p in parts))
    parts.append(decoder.finish())
    return torch.cat(parts), borders[:-1]


def border_jump(wave: torch.Tensor, borders: list[int]) -> float:
    d = wave.diff().abs()
    return max(float(d[b - 2 : b + 2].max()) for b in borders)


def interior_step(wave: torch.Tensor, borders: list[int]) -> float:
    """The largest sample-to-sample step the signal makes away from any border."""
    d = wave.diff().abs()
    keep = torch.ones_like(d, dtype=torch.bool)
    for b in borders:
        keep[max(0, b - 300) : b + 300] = False
    return float(d[keep].max())


@pytest.fixture(scope="module")
def codes():
    return CODEC.encode(speech_like(3.0))


def test_crossfaded_borders_have_no_click(codes):
    # Threshold: a click is a step between neighbouring samples larger than any
    # step the signal makes on its own. So the worst step within 2 samples of a
    # chunk border must stay below the largest step far from any border.
    sizes = [2] + [7] * ((len(codes) - 2) // 7) + [(len(codes) - 2) % 7]
    wave, borders = stream_decode(ChunkDecoder(CODEC, StreamConfig(context_frames=2, crossfade_ms=10)), codes, sizes)
    assert len(wave) == len(codes) * SPF
    assert border_jump(wave, borders) <= interior_step(wave, borders)


def test_the_click_check_fails_without_a_crossfade(codes):
    # Negative control: decoding chunks independently (no context, no fade)
    # restarts the oscillator at each border and the same check catches it.
    sizes = [2] + [7] * ((len(codes) - 2) // 7)
    wave, borders = stream_decode(ChunkDecoder(CODEC, StreamConfig(context_frames=0, crossfade_ms=0)), codes, sizes)
    assert border_jump(wave, borders) > interior_step(wave, borders)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_streaming_resampler_equals_offline(rate):
    x = speech_like(1.3)
    offline = AF.resample(x, 24000, rate, lowpass_filter_width=6)
    rs = StreamingResampler(24000, rate)
    cuts = torch.randint(1, 4000, (40,), generator=torch.Generator().manual_seed(rate)).tolist()
    parts, i = [], 0
    for n in cuts:
        parts.append(rs.push(x[i : i + n]))
        i += n
    parts.append(rs.push(x[i:]))
    parts.append(rs.finish())
    online = torch.cat(parts)
    assert len(online) == len(offline)
    torch.testing.assert_close(online, offline, atol=2e-5, rtol=0)


def test_audio_streamer_small_first_chunk_and_exact_length(codes):
    cfg = StreamConfig(first_chunk_ms=80, chunk_ms=320)  # 2 and 8 frames at 25 Hz
    st = AudioStreamer(CODEC, cfg, 48000)
    due = []  # frames pushed when each chunk came out
    chunks = []
    for i, row in enumerate(codes):
        if (c := st.push(row[None])) is not None:
            chunks.append(c)
            due.append(i + 1)
    chunks.append(st.finish())
    # 2 frames first; later chunks hold at most half the frames delivered so far, up to 8.
    assert [b - a for a, b in zip([0] + due, due)][:9] == [2, 2, 2, 3, 4, 6, 8, 8, 8]
    assert len(chunks[0]) < len(chunks[7]) / 3  # first audio after 2 frames, not 8
    total = sum(len(c) for c in chunks)
    assert total == len(codes) * SPF * 2  # 24 kHz -> 48 kHz, nothing lost or repeated
    assert all(np.isfinite(c.numpy()).all() and c.abs().max() <= 1.0 for c in chunks)


@pytest.mark.parametrize("rate", [7999, 48001, 0])
def test_rate_outside_8_to_48_khz_is_rejected(rate):
    with pytest.raises(ValueError, match="8000-48000"):
        AudioStreamer(CODEC, StreamConfig(), rate)


def test_codec_round_trip_keeps_pitch(codes):
    again = CODEC.encode(CODEC.decode(codes))
    voiced = (codes[:, 0] > 0) & (again[:, 0] > 0)
    assert voiced.float().mean() > 0.8
    # Pitch bins are ~0.8% apart: within 4 bins is within ~3% of the pitch.
    assert (codes[voiced, 0] - again[voiced, 0]).abs().float().median() <= 4


def test_resampling_runs_on_the_callers_thread_alone_and_restores_its_count():
    """A chunk's resampling is too small to share; torch would hand it to a team of every core,
    whose second thread waits for the core the engine holds (engine/runtime/cpu_threads.py)."""
    from engine.runtime.streaming import _resampler

    seen = []
    hook = _resampler(24000, 48000, 6).register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = StreamingResampler(24000, 48000).push(torch.randn(2400))
        assert torch.get_num_threads() == 2  # the caller's own setting, back
    finally:
        hook.remove()
        torch.set_num_threads(before)
    assert len(out) == 2 * (2400 - StreamingResampler(24000, 48000).ctx)  # all but the look-ahead
    assert seen == [1]
