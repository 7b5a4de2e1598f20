"""A small neural codec trained here: log-mel <-> tokens, and a fast vocoder.

    wave 24 kHz --mel (100 frames/s)--> encoder --/4--> 25 frames/s --FSQ--> 8 tokens per frame
    tokens --> decoder --x4--> mel --> vocoder (ConvNeXt + inverse STFT) --> wave

Why this shape:
- Each frame's latent is split into groups, each quantised on its own with
  finite scalar quantisation (FSQ: bounded, rounded to a few levels; no
  codebook to collapse). Groups code different dimensions rather than
  residuals of one another, which suits an LM that predicts every codebook of a
  frame at once from one hidden state.
- The vocoder predicts STFT magnitude and phase and inverts them with one
  inverse FFT per hop (the Vocos idea): no upsampling stack, so it runs far
  faster than real time on one CPU core.
- Every convolution has a bounded receptive field, so decoding a window of
  frames with a little context (engine.runtime.streaming does the crossfade) matches
  decoding the whole utterance.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.codecs.adapt import AdaptConfig, Adapter, adapt, adaptable, align, frame_features, load_adapter
from engine.codecs.rows import PLAIN, Layers, RowLayers, row_values
from engine.packed import pack_for_cpu
from engine.weights import load_weights, save_weights, tensor_digest


@dataclass(frozen=True)
class MelCodecConfig:
    sample_rate: int = 24000
    n_fft: int = 1024
    hop: int = 240  # mel frames at 100 Hz
    n_mels: int = 80
    downsample: int = 4  # -> 25 token frames per second
    groups: int = 8  # codebooks per frame
    levels: tuple[int, ...] = (4, 4, 4, 4)  # FSQ levels per group: 4^4 = 256 codes
    dim: int = 256  # encoder / decoder width
    blocks: int = 4
    vocoder_dim: int = 384
    vocoder_blocks: int = 6

    @property
    def codebook_size(self) -> int:
        n = 1
        for level in self.levels:
            n *= level
        return n

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop / self.downsample


class ResBlock(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(dim, dim, 1)
        self.norm = nn.GroupNorm(1, dim)

    def forward(self, x: torch.Tensor, run: Layers = PLAIN) -> torch.Tensor:
        return x + run(self.conv2, F.gelu(run(self.conv1, run(self.norm, x))))


class FSQ(nn.Module):
    """Finite scalar quantisation of `groups` x len(levels) dims; straight-through gradients."""

    def __init__(self, levels: tuple[int, ...], groups: int):
        super().__init__()
        self.groups = groups
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), 0)
        self.register_buffer("basis", basis, persistent=False)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, groups*d, T] -> values in [-1, 1] on each dimension's level grid (same shape)."""
        B, _, T = z.shape
        top = (self.levels - 1)[None, None, :, None]
        scaled = (torch.tanh(z.view(B, self.groups, -1, T)) + 1) / 2 * top  # in (0, L-1)
        digits = scaled + (scaled.round() - scaled).detach()
        return (digits / top * 2 - 1).view(B, -1, T)

    def to_codes(self, q: torch.Tensor) -> torch.Tensor:
        """Quantised values [B, groups*d, T] -> codes [B, T, groups]."""
        B, _, T = q.shape
        top = (self.levels - 1)[None, None, :, None]
        digits = ((q.view(B, self.groups, -1, T) + 1) / 2 * top).round().long()
        return (digits * self.basis[None, None, :, None]).sum(2).transpose(1, 2)

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T, groups] -> quantised values [B, groups*d, T]."""
        B, T, G = codes.shape
        digits = (codes[..., None] // self.basis) % self.levels.long()  # [B, T, G, d]
        values = digits.float() / (self.levels - 1) * 2 - 1
        return values.permute(0, 2, 3, 1).reshape(B, -1, T)


class MelAutoencoder(nn.Module):
    def __init__(self, cfg: MelCodecConfig):
        super().__init__()
        d, latent = cfg.dim, cfg.groups * len(cfg.levels)
        enc = [nn.Conv1d(cfg.n_mels, d, 3, padding=1)] + [ResBlock(d, 2 ** (i % 3)) for i in range(cfg.blocks)]
        for _ in range(cfg.downsample // 2):
            enc += [nn.Conv1d(d, d, 4, stride=2, padding=1), ResBlock(d, 1)]
        self.encoder = nn.Sequential(*enc, nn.GroupNorm(1, d), nn.Conv1d(d, latent, 1))
        self.fsq = FSQ(cfg.levels, cfg.groups)
        dec = [nn.Conv1d(latent, d, 3, padding=1), ResBlock(d, 1)]
        for _ in range(cfg.downsample // 2):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(d, d, 3, padding=1), ResBlock(d, 1)]
        dec += [ResBlock(d, 2 ** (i % 3)) for i in range(cfg.blocks)]
        self.decoder = nn.Sequential(*dec, nn.GroupNorm(1, d), nn.Conv1d(d, cfg.n_mels, 3, padding=1))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fsq.quantize(self.encoder(mel)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 3 * dim)
        self.down = nn.Linear(3 * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor, run: Layers = PLAIN) -> torch.Tensor:
        y = run(self.norm, run(self.dw, x).transpose(1, 2))
        return x + (run.param(self, "scale") * run(self.down, F.gelu(run(self.up, y)))).transpose(1, 2)


class Vocoder(nn.Module):
    """Log-mel [B, n_mels, T] -> wave [B, T * hop] through an inverse STFT."""

    def __init__(self, cfg: MelCodecConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.vocoder_dim
        self.inp = nn.Conv1d(cfg.n_mels, d, 7, padding=3)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(d) for _ in range(cfg.vocoder_blocks)])
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.n_fft + 2)  # magnitude and phase per bin
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, mel: torch.Tensor, run: Layers = PLAIN) -> torch.Tensor:
        h = run(self.norm, run(self.blocks, run(self.inp, mel)).transpose(1, 2))
        mag, phase = run(self.out, h).transpose(1, 2).chunk(2, dim=1)
        spec = torch.polar(torch.exp(mag.clamp(max=6.0)), phase)  # (a complex exp costs ~3x as much)
        return torch.istft(
            spec, self.cfg.n_fft, self.cfg.hop, window=self.window, center=True, length=mel.shape[-1] * self.cfg.hop
        )


MEL_FLOOR = 1e-5  # the smallest mel magnitude the front end takes the log of


class MelFrontEnd(nn.Module):
    def __init__(self, cfg: MelCodecConfig):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop, n_mels=cfg.n_mels, power=1.0, center=True
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> log-mel [B, n_mels, samples // hop]."""
        mel = self.mel(wave)[..., : wave.shape[-1] // self.mel.hop_length]
        return torch.log(mel.clamp_min(MEL_FLOOR))


_PARTLY_LOADED: Adapter = {}  # never any voice's adapter: the next call loads its own in full


class MelCodec:
    """The engine's Codec: 24 kHz wave <-> [frames, groups] tokens at 25 frames/s."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", packed: torch.dtype | None = None):
        """`packed`: decode on oneDNN with weights pre-packed in this dtype (None: plain modules)."""
        model_dir = Path(model_dir)
        raw = json.loads((model_dir / "codec.json").read_text())
        raw["levels"] = tuple(raw["levels"])
        self.cfg = MelCodecConfig(**raw)
        self.front = MelFrontEnd(self.cfg)
        self.autoencoder = MelAutoencoder(self.cfg).eval()
        self.vocoder = Vocoder(self.cfg).eval()
        self.model_dir = model_dir
        weights = load_codec_weights(model_dir, self.autoencoder, self.vocoder)
        self.encoder_digest = tensor_digest(weights, "ae.encoder.")
        self.identity = f"mel-{self.encoder_digest}"
        # What a voice adapter was tuned from: the decoder and vocoder (the encoder is in identity).
        self.decoder_digest = tensor_digest(weights, "ae.decoder.")[:8] + tensor_digest(weights, "voc.")[:8]
        # The decode modules' own values of what an adapter replaces, to put back when a window
        # of an unadapted voice comes; one adapter is loaded at a time, under this lock.
        adaptable_now = adaptable(self.autoencoder.decoder, "dec.") | adaptable(self.vocoder, "voc.")
        self._base = {k: v.detach().clone() for k, v in adaptable_now.items()}
        self._loaded: Adapter | None = None
        self._adapter_lock = threading.Lock()
        if packed is not None:  # the streaming path only: tokens from encode() stay exactly as training made them
            pack_for_cpu(self.autoencoder.decoder, packed)
            pack_for_cpu(self.vocoder, packed)
        # The decode layers by the names adapters key them by, for windows of mixed voices.
        self._names = {m: f"dec.{n}" for n, m in self.autoencoder.decoder.named_modules() if n}
        self._names |= {m: f"voc.{n}" for n, m in self.vocoder.named_modules() if n}
        self.sample_rate, self.frame_rate = self.cfg.sample_rate, self.cfg.frame_rate
        self.num_codebooks, self.codebook_size = self.cfg.groups, self.cfg.codebook_size
        # Each code's value on each FSQ dimension of its group: [d, codebook_size].
        self._code_values = self.autoencoder.fsq.from_codes(torch.arange(self.codebook_size)[None, :, None])[0]

    @property
    def samples_per_frame(self) -> int:
        return self.cfg.hop * self.cfg.downsample

    def _pad(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono float wave, zero-padded to whole token frames."""
        wave = wave.float().flatten()
        return F.pad(wave, (0, (-len(wave)) % self.samples_per_frame))

    @torch.inference_mode()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        z = self.autoencoder.encoder(self.front(self._pad(wave)[None]))
        return self.autoencoder.fsq.to_codes(self.autoencoder.fsq.quantize(z))[0]

    def adapt(self, wave: torch.Tensor, cfg: AdaptConfig, spoken: torch.Tensor | None = None) -> Adapter | None:
        """Tune the decoder and vocoder to one voice's reference clip (mono, at sample_rate);
        None when `cfg` turns adaptation off or the tuning diverged. `spoken`: the LM's own
        rendering of the clip's transcript in the voice, per frame what decode_batch takes
        (codes or expected latents), to tune on as well (engine.codecs.adapt)."""
        if not cfg.steps:
            return None
        wave = self._pad(wave)
        latent = self.autoencoder.fsq.from_codes(self.encode(wave)[None])[0].clone()  # out of inference mode
        if spoken is not None:
            spoken = self._latent(spoken[None])[0]
            spoken = self._aligned(spoken, wave, latent.shape[-1]) if cfg.lm_match == "frames" else spoken.clone()
        # Fresh float copies of the decode half for adapt() to tune: the ones decoding here may
        # be packed for inference, and must stay as shipped.
        ae, vocoder = MelAutoencoder(self.cfg), Vocoder(self.cfg)
        load_codec_weights(self.model_dir, ae, vocoder)
        return adapt(ae.decoder, vocoder, self.front, latent, wave, cfg, spoken)

    def _aligned(self, spoken: torch.Tensor, wave: torch.Tensor, frames: int) -> torch.Tensor:
        """The LM's rendering [latent_dim, n] stretched onto the clip's timeline [latent_dim,
        frames]: each clip frame takes the rendered frame its sound matched (engine.codecs.adapt.align)."""
        said = self.decode_latent(spoken[None])[0]  # as the codec shipped renders it
        match = align(frame_features(self.front, said, spoken.shape[-1]), frame_features(self.front, wave, frames))
        return spoken[:, match].clone()  # (out of inference mode, for the tuning)

    def _latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Windows [B, frames, groups] of codes or [B, frames, latent_dim] of latents -> [B, latent_dim, frames]."""
        if codes.is_floating_point():
            return codes.float().cpu().transpose(1, 2)
        return self.autoencoder.fsq.from_codes(codes.long().cpu())

    def decode(self, codes: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
        return self.decode_batch(codes[None], adapter)[0]

    # decode_batch takes a list of adapters too, one per row (engine.codecs.rows).
    per_row_adapters = True

    @torch.inference_mode()
    def decode_batch(self, codes: torch.Tensor, adapter: Adapter | list[Adapter | None] | None = None) -> torch.Tensor:
        """Windows [B, frames, groups] of codes, or [B, frames, latent_dim] of float latents
        (expected_latent's), -> waves [B, samples]; through one voice's `adapter` if given, or
        each row through its own with a list of B adapters (None: the codec as shipped)."""
        return self.decode_latent(self._latent(codes), adapter)

    @torch.inference_mode()
    def decode_latent(
        self, latent: torch.Tensor, adapter: Adapter | list[Adapter | None] | None = None
    ) -> torch.Tensor:
        """FSQ latents [B, groups * len(levels), frames] (on the level grid or between) -> waves [B, samples]."""
        if isinstance(adapter, list):  # per row: the shared layers are never written to
            run = RowLayers(self._names, row_values(self._base, adapter))
            return self.vocoder(run(self.autoencoder.decoder, latent), run).clamp(-1, 1)
        with self._adapter_lock:
            if adapter is not self._loaded:  # swap ~30 k numbers in place: no copy of the weights per voice
                self._loaded = _PARTLY_LOADED  # until the swap completes: a bad adapter fails its own call only
                load_adapter(
                    {"dec.": self.autoencoder.decoder, "voc.": self.vocoder}, self._base if adapter is None else adapter
                )
                self._loaded = adapter
            return self.vocoder(self.autoencoder.decoder(latent)).clamp(-1, 1)

    @property
    def latent_dim(self) -> int:
        return self.cfg.groups * len(self.cfg.levels)

    def expected_latent(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-codebook distributions [frames, groups, codebook_size] -> the expected latent
        [frames, latent_dim]: each FSQ dimension's mean level, which decode_batch takes in
        place of codes. A one-hot distribution gives exactly its code's latent."""
        values = self._code_values.to(probs.device)  # [d, codes]
        return torch.einsum("tgc,dc->tgd", probs.float(), values).reshape(probs.shape[0], self.latent_dim)

    @torch.inference_mode()
    def decode_expected(self, probs: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
        """Per-codebook distributions [frames, groups, codebook_size] -> wave, decoded from the
        expected latent instead of drawn codes (through a voice's `adapter`, if given)."""
        return self.decode_batch(self.expected_latent(probs)[None], adapter)[0]


def load_codec_weights(model_dir: str | Path, ae: MelAutoencoder, vocoder: Vocoder) -> dict[str, torch.Tensor]:
    """Fill `ae` and `vocoder` from model_dir/codec.safetensors; returns the weights by name."""
    weights = load_weights(Path(model_dir) / "codec.safetensors")
    ae.load_state_dict({k[3:]: v for k, v in weights.items() if k.startswith("ae.")})
    vocoder.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("voc.")})
    return weights


def save_codec(
    model_dir: str | Path, cfg: MelCodecConfig, ae: MelAutoencoder, vocoder: Vocoder, int8: bool = False
) -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "codec.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    weights = {f"ae.{k}": v for k, v in ae.state_dict().items()}
    weights |= {f"voc.{k}": v for k, v in vocoder.state_dict().items()}
    save_weights(model_dir / "codec.safetensors", weights, int8=int8)
