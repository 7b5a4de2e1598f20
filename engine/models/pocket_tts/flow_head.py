"""The per-frame sampler: maps the backbone's condition and a noise vector to the next latent.

An MLP with adaptive LayerNorm (each block's shift, scale and gate come from the condition).
The flow types differ only in how the output is used, all in one network evaluation:
    lsd        latent = noise + F(cond, s=0, t=1, noise)   (one step of the distilled flow)
    pointwise  latent = noise + F(cond, noise)
    drifting   latent = F(cond, noise)
LSD's time conditions are fixed (0 and 1), so their embedding is a constant computed once in
`prepare()`. The caller draws the noise (std sqrt(temperature)) from its own generators: this
module never touches a random number generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.pocket_tts.config import FlowHeadConfig

_TIME_FEATURES = 256  # sinusoidal features of a time value, cos half then sin half


class TimeEmbedding(nn.Module):
    """A scalar time -> [dim]: sinusoids, Linear, SiLU, Linear, then a norm that scales by the
    inverse of the unbiased variance but does not centre."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("freqs", torch.zeros(_TIME_FEATURES // 2))  # stored in the checkpoint
        self.fc1 = nn.Linear(_TIME_FEATURES, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t * self.freqs
        e = self.fc2(F.silu(self.fc1(torch.cat([a.cos(), a.sin()], dim=-1))))
        return e * (self.gain * torch.rsqrt(e.var(dim=-1, keepdim=True) + 1e-5))


class AdaLNBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.modulation = nn.Linear(dim, 3 * dim)

    def forward(self, h: torch.Tensor, y_act: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(y_act).chunk(3, dim=-1)
        u = self.norm(h) * (1 + scale) + shift
        return h + gate * self.fc2(F.silu(self.fc1(u)))


class FlowHead(nn.Module):
    def __init__(self, cfg: FlowHeadConfig, latent_dim: int, cond_dim: int):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.noise_in = nn.Linear(latent_dim, D)
        self.cond_in = nn.Linear(cond_dim, D)
        self.time_embed = nn.ModuleList(TimeEmbedding(D) for _ in range(cfg.time_conditions))
        self.blocks = nn.ModuleList(AdaLNBlock(D) for _ in range(cfg.depth))
        self.final_modulation = nn.Linear(D, 2 * D)
        self.out = nn.Linear(D, latent_dim)
        # The mean of the time embeddings at LSD's fixed (s, t) = (0, 1); set by prepare().
        self.register_buffer("time_bias", None, persistent=False)

    def checkpoint_keys(self) -> dict[str, str]:
        p = "flow_lm.flow_net."
        keys = {f"final_modulation.{w}": f"{p}final_layer.adaLN_modulation.1.{w}" for w in ("weight", "bias")}
        for o, t in (("noise_in", "input_proj"), ("cond_in", "cond_embed"), ("out", "final_layer.linear")):
            keys |= {f"{o}.weight": f"{p}{t}.weight", f"{o}.bias": f"{p}{t}.bias"}
        for k in range(len(self.time_embed)):
            q = f"{p}time_embed.{k}."
            keys |= {f"time_embed.{k}.freqs": q + "freqs", f"time_embed.{k}.gain": q + "mlp.3.alpha"}
            for o, t in (("fc1", "mlp.0"), ("fc2", "mlp.2")):
                keys |= {f"time_embed.{k}.{o}.{w}": f"{q}{t}.{w}" for w in ("weight", "bias")}
        for j in range(len(self.blocks)):
            q = f"{p}res_blocks.{j}."
            for o, t in (("norm", "in_ln"), ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("modulation", "adaLN_modulation.1")):
                keys |= {f"blocks.{j}.{o}.{w}": f"{q}{t}.{w}" for w in ("weight", "bias")}
        return keys

    @torch.no_grad()
    def prepare(self) -> None:
        """Compute the constant time term. Call after loading weights (and after changing them)."""
        if not self.time_embed:
            self.time_bias = None
            return
        s = self.time_embed[0].gain.new_zeros(1, 1)  # (a parameter that CPU packing leaves in place)
        self.time_bias = (self.time_embed[0](s) + self.time_embed[1](s + 1)) / 2

    def forward(self, cond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The network F(cond [B, c], x [B, L]) -> [B, L]."""
        y = self.cond_in(cond)
        if self.time_embed:
            if self.time_bias is None:
                raise RuntimeError("FlowHead.prepare() was not called after loading")
            y = y + self.time_bias
        y_act = F.silu(y)  # every modulation reads SiLU(y)
        h = self.noise_in(x)
        for block in self.blocks:
            h = block(h, y_act)
        shift, scale = self.final_modulation(y_act).chunk(2, dim=-1)
        h = F.layer_norm(h, (h.shape[-1],), eps=1e-6) * (1 + scale) + shift
        return self.out(h)

    def sample(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """cond [B, c], noise [B, L] already scaled by sqrt(temperature) -> the next latent [B, L]."""
        out = self.forward(cond, noise)
        return out if self.cfg.type == "drifting" else noise + out
