"""Per-voice codec adaptation: the decoder and vocoder tuned to one reference clip.

Why: the codec was trained on 50 teacher voices, and for a new voice its
vocoder falls back toward the voices it knows. On the held-out voices the
vocoder alone, fed the teacher's own mels, kept the right voice for only 0.875
of the lines: two voices that sit close together (0.045 apart in speaker
similarity) were merged. The reference clip a voice is registered from is
itself a training example for that voice (its mel, its tokens and its
waveform are all known), so at registration the codec takes a few hundred
gradient steps on it.

Only the one-dimensional parameters move (biases, norm gains, the ConvNeXt
layer scales: ~30 k numbers, 0.3% of the codec). That is enough to recolour
the vocoder's excitation per voice, too few to memorise the clip's words, and
small enough to store with the voice and to swap into the shared decoder per
batch (`MelCodec.decode_batch(..., adapter)`), with no per-voice copy of the
weights. Measured on the held-out voices: docs/architecture.md, "Per-voice codec adaptation".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import AdaptConfig

STFT_SIZES = ((512, 128), (1024, 256), (2048, 512))  # multi-resolution: short frames for onsets, long for pitch

Adapter = dict[str, torch.Tensor]  # parameter name (as in the float modules' state dict) -> its adapted value


def stft_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence plus log-magnitude L1, averaged over sizes."""
    loss = fake.new_zeros(())
    for n_fft, hop in STFT_SIZES:
        window = torch.hann_window(n_fft, device=fake.device)
        f = torch.stft(fake, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5)
        r = torch.stft(real, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5)
        loss = loss + torch.linalg.norm(r - f) / torch.linalg.norm(r) + F.l1_loss(f.log(), r.log())
    return loss / len(STFT_SIZES)


def adaptable(module: nn.Module, prefix: str) -> dict[str, nn.Parameter]:
    """The parameters adaptation moves: every one-dimensional one, by prefixed name."""
    return {prefix + name: p for name, p in module.named_parameters() if p.dim() == 1}


def adapt(
    decoder: nn.Module,
    vocoder: nn.Module,
    front: nn.Module,
    latent: torch.Tensor,
    wave: torch.Tensor,
    cfg: AdaptConfig,
    spoken: torch.Tensor | None = None,
) -> Adapter | None:
    """Tune the one-dimensional parameters of `decoder` (FSQ latents -> log-mel) and `vocoder`
    (log-mel -> wave), float modules that are the caller's to spend, to one clip; returns the
    tuned values, prefixed "dec."/"voc.", or None if the tuning diverged (the voice then keeps
    the codec as shipped rather than fail to register).

    latent [latent_dim, frames] is the clip's quantised latent; wave [frames * samples_per_latent]
    its waveform, already padded to whole latent frames. `spoken` [latent_dim, frames], if given,
    is the LM's own rendering of the clip's words aligned to the clip (MelCodec.adapt aligns it):
    `cfg.lm_share` of the decoder's steps, spread evenly, read it instead of `latent`, against
    the same stretch of the clip's mel. With `cfg.lm_match` "stats", `spoken` keeps its own
    timeline (any length) and those steps match each mel band's mean and spread over a crop
    of it to the clip's: no alignment, so nothing to smear.
    The LM's frames carry the timbre of the voices it was trained on, and the clip's codes do
    not; a decoder tuned on the codes alone leaves that timbre in place when the LM speaks."""
    latent, wave = latent.detach().float(), wave.detach().float()
    stats = cfg.lm_match == "stats"
    if spoken is not None and not stats and spoken.shape != latent.shape:
        raise ValueError(f"spoken latents {tuple(spoken.shape)} must match the clip's {tuple(latent.shape)}")
    frames = latent.shape[-1]
    per_frame = wave.shape[-1] // frames
    mel_per_frame = per_frame // front.mel.hop_length
    crop = max(1, min(frames, round(cfg.crop_seconds * front.mel.sample_rate / per_frame)))
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        mel = front(wave[None])  # [1, n_mels, frames * mel_per_frame]
        clip_stats = band_stats(mel)
    dec, voc = decoder.train(), vocoder.train()
    out: Adapter = {}
    for prefix, module in (("dec.", dec), ("voc.", voc)):
        module.requires_grad_(False)
        params = adaptable(module, prefix)
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params.values(), lr=cfg.lr)
        for step in range(cfg.steps):
            start = int(torch.randint(0, frames - crop + 1, (1,), generator=gen))
            m0, m1 = start * mel_per_frame, (start + crop) * mel_per_frame
            target = mel[..., m0:m1]
            if module is dec:
                lm_turn = spoken is not None and int((step + 1) * cfg.lm_share) > int(step * cfg.lm_share)
                if lm_turn and stats:
                    s0 = int(torch.randint(0, max(1, spoken.shape[-1] - crop + 1), (1,), generator=gen))
                    said = band_stats(dec(spoken[None, :, s0 : s0 + crop]))
                    loss = sum(F.l1_loss(a, b) for a, b in zip(said, clip_stats))
                else:
                    source = spoken if lm_turn else latent
                    loss = F.l1_loss(dec(source[None, :, start : start + crop]), target)
            else:
                # Half the steps on the teacher mel, half on what the tuned decoder makes of the
                # tokens: the vocoder learns the voice, and the voice as the decoder renders it.
                if step % 2:
                    with torch.no_grad():
                        target_in = dec(latent[None, :, start : start + crop])
                else:
                    target_in = target
                fake = voc(target_in)
                real = wave[None, start * per_frame : (start + crop) * per_frame]
                loss = stft_loss(fake, real) + F.l1_loss(front(fake), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out |= {name: p.detach().clone() for name, p in params.items()}
    return out if all(bool(torch.isfinite(v).all()) for v in out.values()) else None


def band_stats(mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each band's mean and spread over time of a log-mel [1, n_mels, T]: the voice's average
    spectrum and how far it moves, whatever is said when."""
    return mel.mean(-1), mel.std(-1)


def frame_features(front: nn.Module, wave: torch.Tensor, frames: int) -> torch.Tensor:
    """Log-mel averaged over each latent frame and normalised per mel band over the clip
    [frames, n_mels]: what a frame says more than who says it, for alignment."""
    with torch.no_grad():
        mel = front(wave.detach().float()[None])[0]
    per = mel.shape[-1] // frames
    feats = mel[:, : frames * per].reshape(mel.shape[0], frames, per).mean(2).T
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-5)


def align(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dynamic time warping of feature rows a [n, d] onto b [m, d] by cosine distance: for
    each row of b, the row of a it matched (the first, where several did) [m] long."""
    a, b = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    cost = (1 - a @ b.T).numpy()
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):  # row by row; within a row each cell needs its left neighbour
        diag_up = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:]) + cost[i - 1]
        row = acc[i]
        for j in range(1, m + 1):
            row[j] = min(diag_up[j - 1], row[j - 1] + cost[i - 1, j - 1])
    match = np.zeros(m, dtype=np.int64)
    i, j = n, m
    while i > 0 and j > 0:
        match[j - 1] = i - 1  # (overwritten on the way back: the first row matched wins)
        step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return torch.from_numpy(match)


def _slot(root: nn.Module, name: str) -> torch.Tensor:
    """The tensor a float-module parameter name refers to, in `root` as it is now: plain, or
    with its layers swapped for engine.packed's (whose bias sits on the inner linear)."""
    from engine.packed import PackedConv1d

    *path, leaf = name.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    if isinstance(module, PackedConv1d):
        module = module.linear
    return getattr(module, leaf)


@torch.no_grad()
def load_adapter(roots: dict[str, nn.Module], adapter: Adapter) -> None:
    """Write `adapter` into the modules, {"dec.": decoder, "voc.": vocoder}, in place."""
    for name, value in adapter.items():
        prefix, rest = name[:4], name[4:]
        _slot(roots[prefix], rest).copy_(value)
