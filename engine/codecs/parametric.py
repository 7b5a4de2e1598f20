"""The codec of the random-weight test model: a hand-written source-filter model, not
a neural codec. Per frame it keeps pitch, loudness and two formant frequencies, and
it resynthesises a buzzy, vowel-like voice. It is real audio and streams, so it exercises every
path of the engine, but it does not carry words.
"""

from __future__ import annotations

import math

import torch


def _log_bins(lo: float, hi: float, n: int) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(lo), math.log(hi), n))


class ParametricCodec:
    """Codebooks: 0 pitch (0 = unvoiced), 1 loudness, 2 first formant, 3 second formant."""

    num_codebooks = 4

    def __init__(self, sample_rate: int = 24000, frame_rate: float = 25.0, codebook_size: int = 256):
        self.sample_rate, self.frame_rate, self.codebook_size = sample_rate, frame_rate, codebook_size
        self.identity = "parametric"
        n = codebook_size
        self.f0_bins = _log_bins(60.0, 500.0, n - 1)  # id 0 means unvoiced
        self.db_bins = torch.linspace(-70.0, 0.0, n)
        self.f1_bins = _log_bins(200.0, 1200.0, n)
        self.f2_bins = _log_bins(700.0, 3200.0, n)

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))

    # ---- analysis ------------------------------------------------------------
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        spf, sr = self.samples_per_frame, self.sample_rate
        wave = wave.float().flatten()
        T = max(1, wave.numel() // spf)
        wave = torch.nn.functional.pad(wave, (spf // 2, spf + spf // 2))
        win = wave.unfold(0, 2 * spf, spf)[:T] * torch.hann_window(2 * spf)
        rms = win.pow(2).mean(-1).sqrt() / 0.61  # undo the Hann window's mean-square loss
        db = 20 * torch.log10(rms.clamp_min(1e-4))
        spec = torch.fft.rfft(win, n=4 * spf).abs()
        freqs = torch.fft.rfftfreq(4 * spf, 1 / sr)
        # Pitch from the autocorrelation peak within 60-500 Hz.
        ac = torch.fft.irfft(spec.pow(2), n=4 * spf)[:, : sr // 60 + 1]
        lo = sr // 500
        lag = ac[:, lo:].argmax(-1) + lo
        voiced = ac.gather(1, lag[:, None]).squeeze(1) > 0.45 * ac[:, 0]
        f0 = sr / lag.float()
        f1 = self._centroid(spec, freqs, 200.0, 1200.0)
        f2 = self._centroid(spec, freqs, 900.0, 3200.0)
        codes = torch.stack(
            [
                torch.where(voiced & (db > -50), self._nearest(self.f0_bins, f0) + 1, 0),
                self._nearest(self.db_bins, db),
                self._nearest(self.f1_bins, f1),
                self._nearest(self.f2_bins, f2),
            ],
            dim=-1,
        )
        return codes.long()

    @staticmethod
    def _centroid(spec, freqs, lo, hi):
        band = (freqs >= lo) & (freqs <= hi)
        s, f = spec[:, band], freqs[band]
        return (s * f).sum(-1) / s.sum(-1).clamp_min(1e-8)

    @staticmethod
    def _nearest(bins: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return (values[:, None] - bins[None, :]).abs().argmin(-1)

    # ---- synthesis -----------------------------------------------------------
    def decode_batch(self, codes: torch.Tensor, adapter: dict | None = None) -> torch.Tensor:
        return torch.stack([self.decode(c, adapter) for c in codes])  # cheap per window: nothing to batch

    def decode(self, codes: torch.Tensor, adapter: dict | None = None) -> torch.Tensor:
        if adapter is not None:
            raise ValueError("the parametric codec does not adapt to voices")
        codes = codes.long().cpu().clamp(0, self.codebook_size - 1)
        spf, sr, T = self.samples_per_frame, self.sample_rate, codes.shape[0]
        voiced = (codes[:, 0] > 0).float()
        f0 = self.f0_bins[(codes[:, 0] - 1).clamp_min(0)]
        gain = 10 ** (self.db_bins[codes[:, 1]] / 20)
        f1, f2 = self.f1_bins[codes[:, 2]], self.f2_bins[codes[:, 3]]
        # Frame parameters sit at frame centres; interpolate them per sample.
        centres = (torch.arange(T) + 0.5) * spf
        t = torch.arange(T * spf).float()

        def per_sample(x: torch.Tensor) -> torch.Tensor:
            if T == 1:
                return x.expand(T * spf)
            idx = torch.searchsorted(centres, t).clamp(1, T - 1)
            w = ((t - centres[idx - 1]) / spf).clamp(0, 1)
            return x[idx - 1] * (1 - w) + x[idx] * w

        f0s, gs, vs = per_sample(f0), per_sample(gain), per_sample(voiced)
        f1s, f2s = per_sample(f1), per_sample(f2)
        phase = torch.cumsum(2 * math.pi * f0s / sr, 0)
        harmonics = torch.arange(1, 41).float()
        hf = f0s[:, None] * harmonics[None, :]
        env = 1 / (1 + ((hf - f1s[:, None]) / 90) ** 2) + 0.6 / (1 + ((hf - f2s[:, None]) / 140) ** 2)
        env = env * (hf < sr / 2) / harmonics.sqrt()
        buzz = (env * torch.sin(phase[:, None] * harmonics[None, :])).sum(-1)
        buzz = buzz / env.pow(2).sum(-1).div(2).sqrt().clamp_min(1e-6)  # unit RMS
        # Seeded from the codes: the same frames always give the same samples.
        noise = torch.randn(T * spf, generator=torch.Generator().manual_seed(int(codes.sum()))) * 0.5
        return (gs * (vs * buzz + (1 - vs) * noise)).clamp(-1, 1)
