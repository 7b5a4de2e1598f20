"""engine.train.discriminators: the vocoder's adversaries learn."""

from __future__ import annotations

import numpy as np
import torch


def test_discriminators_learn_to_tell_a_voice_like_tone_from_noise():
    """A few steps of the vocoder's adversaries on real = harmonic tones, fake = noise of the
    same loudness: their loss falls, and they score the tones higher than the noise."""
    from engine.train.discriminators import Discriminators, discriminator_loss, generator_loss

    torch.manual_seed(0)
    disc = Discriminators(periods=(2, 5), resolutions=((256, 64),))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    t = torch.arange(4800) / 24000

    def batch():
        f0 = 120 + 200 * torch.rand(4, 1)
        tone = sum(torch.sin(2 * torch.pi * k * f0 * t + torch.rand(4, 1) * 6) / k for k in range(1, 6)) * 0.1
        return tone, torch.randn(4, 4800) * tone.std()

    losses = []
    for _ in range(60):
        real, fake = batch()
        loss = discriminator_loss(disc(real)[0], disc(fake)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    real, fake = batch()
    with torch.no_grad():
        assert generator_loss(disc(fake)[0]) > generator_loss(disc(real)[0])
