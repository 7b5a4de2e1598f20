"""pocket-tts as a model family of the engine (engine.runtime.family).

The engine's positions are frames of integer ids, which its block pool hashes and
compares on a prefix-cache hit. A pocket-tts position is continuous (a voice latent,
a generated latent) or a text token, so a frame here is [kind, 32 latent values as
their float32 bit patterns]: the ids name the content exactly, the voice prefix is
cached and shared like any other, and a preempted stream is recomputed from its frames.

    kind < n_bins          a text token (row n_bins of the table pads batches)
    VOICE_BOS              bos_before_voice, position 0 of the voice prefix
    VOICE                  speaker_proj(voice latent)
    LATENT_BOS             the first step's input (the reference's NaN latent)
    LATENT                 input_linear(the latent generated one step earlier)

The head draws each row's noise from that request's own generator, runs the flow head
and applies the reference's stop rule (EOS counted from frame 6, then a few more frames).
There are no timing marks: nothing in the model says when a word is spoken.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import nn

from engine.config import EngineConfig, SamplingParams
from engine.models.pocket_tts.generate import StopRule, max_frames, scaled_noise
from engine.models.pocket_tts.mimi import DecoderState
from engine.models.pocket_tts.model import PocketTTS, load_model
from engine.models.pocket_tts.text import Chunk, chunk_text
from engine.models.pocket_tts.voice import voice_latents
from engine.packed import pack_for_cpu
from engine.runtime.family import KVLayout, Plan, Step
from engine.runtime.outputs import NothingToSay
from engine.runtime.sequence import Sequence
from engine.runtime.voice import VoicePrompt

# The shipped configs name their weights .../languages/<language>[_24l]/model.safetensors.
LANGUAGES = {"english": "en", "french": "fr", "german": "de", "spanish": "es", "italian": "it",
             "portuguese": "pt", "dutch": "nl"}  # fmt: skip
MAX_POSITIONS = 2048  # a 30 s voice (376) + a 50-token chunk + its length cap (234), with room to spare


def checkpoint_language(model_dir: str | Path) -> str:
    """The language a checkpoint speaks, from the weights path its config.yaml names ("en" if none)."""
    text = (Path(model_dir) / "config.yaml").read_text(encoding="utf-8")
    found = re.search(r"languages/([a-z]+?)(?:_\w+)?/", text)
    return LANGUAGES.get(found.group(1), "en") if found else "en"


def latent_ids(latents: torch.Tensor) -> torch.Tensor:
    """Float latents [..., L] -> int64 ids holding their float32 bit patterns (exact, hashable)."""
    return latents.float().contiguous().view(torch.int32).long()


def ids_latent(ids: torch.Tensor) -> torch.Tensor:
    return ids.to(torch.int32).view(torch.float32)


class PocketNetwork(nn.Module):
    """The backbone behind the engine's model runner: frames [B, T, 1 + L] -> hidden [B, T, d]."""

    def __init__(self, model: PocketTTS):
        super().__init__()
        self.backbone = bb = model.backbone
        n_bins = model.cfg.flow_lm.lookup_table.n_bins
        self.pad_id = n_bins
        self.VOICE_BOS, self.VOICE, self.LATENT_BOS, self.LATENT = n_bins + 1, n_bins + 2, n_bins + 3, n_bins + 4
        self.latent_dim = L = model.cfg.latent_dim
        self.voice_dim = model.cfg.mimi.voice_dim  # 32 like the generated latents, 512 in older checkpoints
        self.width = max(L, self.voice_dim)
        self.kv_layout = KVLayout(bb.n_layers, bb.n_kv_heads, bb.head_dim)
        self.max_positions = MAX_POSITIONS
        self.pad_frame = torch.tensor([self.pad_id] + [0] * self.width, dtype=torch.long)

    def frame(self, kind: int, vector: torch.Tensor | None = None) -> torch.Tensor:
        row = torch.zeros(1 + self.width, dtype=torch.long)
        row[0] = kind
        if vector is not None:
            row[1 : 1 + len(vector)] = latent_ids(vector)
        return row

    def forward(self, frames: torch.Tensor, positions: torch.Tensor, paged=None) -> torch.Tensor:
        bb = self.backbone
        kind, vec = frames[..., :1], ids_latent(frames[..., 1:]).to(bb.out_norm.weight.dtype)
        x = bb.embed_text(frames[..., 0].clamp(max=self.pad_id))
        x = torch.where(kind == self.VOICE, bb.speaker_proj(vec[..., : self.voice_dim]), x)
        lat = vec[..., : self.latent_dim]
        gen = torch.where(kind == self.LATENT_BOS, bb.latent_bos, lat)
        x = torch.where((kind == self.LATENT) | (kind == self.LATENT_BOS), bb.latent_in(gen), x)
        if bb.voice_bos is not None:
            x = torch.where(kind == self.VOICE_BOS, bb.voice_bos.view(-1), x)
        return bb(x, positions, paged)


class MimiCodec:
    """The Mimi codec as the engine sees it: encode a voice clip to latents; decode each
    stream's latents causally with its own state (engine.runtime.streaming.StatefulDecoder)."""

    num_codebooks = codebook_size = 0  # continuous latents, no codebooks

    def __init__(self, model: PocketTTS):
        self.decoder, self.encoder = model.decoder, model.encoder
        self.sample_rate = model.cfg.mimi.sample_rate
        self.frame_rate = model.cfg.mimi.frame_rate
        digest = hashlib.blake2b(digest_size=8)
        for name, t in sorted(self.encoder.state_dict().items()):
            digest.update(name.encode() + t.float().numpy().tobytes())
        self.identity = f"mimi-{digest.hexdigest()}"  # what voice latents depend on

    @property
    def samples_per_frame(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @torch.inference_mode()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """A mono clip at the codec's rate -> its voice latents [frames, L]."""
        return voice_latents(self.encoder, wave, self.sample_rate)[0]

    def new_stream(self) -> DecoderState:
        return self.decoder.init_state(1)

    @torch.inference_mode()
    def decode_streams(self, states: list[DecoderState], latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, n, L] of B streams, each at its own position -> audio [B, n * samples_per_frame];
        each stream's state moves on (in place, so its owner sees it)."""
        batch = states[0] if len(states) == 1 else DecoderState.stack(states)
        audio = self.decoder(latents.to(self.decoder.latent_std.dtype), batch).float()
        if len(states) > 1:
            for state, own in zip(states, batch.split()):
                state.pos, state.tensors = own.pos, own.tensors
        return audio

    def decode(self, latents: torch.Tensor, adapter: dict | None = None) -> torch.Tensor:
        return self.decode_streams([self.new_stream()], latents[None])[0]

    def decode_batch(self, latents: torch.Tensor, adapter: dict | None = None) -> torch.Tensor:
        return self.decode_streams([self.new_stream() for _ in latents], latents)


class PocketTokenizer:
    """What the service asks of a tokenizer: whether text has anything to speak."""

    reads_phonemes = False

    def __init__(self, model: PocketTTS):
        self.model = model

    def chunks(self, text: str) -> list[Chunk]:
        """The reference's chunks of `text` (none when nothing is left to speak)."""
        try:
            return chunk_text(self.model.tokenizer, text, self.model.rules) if text.strip() else []
        except ValueError:  # the text rules left nothing (a line of characters they delete)
            return []

    def encode(self, text: str) -> list[int]:
        return [t for c in self.chunks(text) for t in c.tokens]


class PocketTTSFamily:
    def __init__(
        self,
        model_dir: str | Path,
        config: EngineConfig,
        device: torch.device,
        dtype: torch.dtype,
        packed: tuple[torch.dtype, bool] | None = None,
    ):
        """`packed`: the engine runs on pre-packed CPU kernels. The backbone and the flow head
        are then packed in float32 whatever dtype is asked for (other dtypes would move the
        numbers off the reference's): that also gives a row the same bits alone or batched.
        The Mimi decoder stays unpacked, which measured faster at 8 streams."""
        self.pocket = load_model(model_dir, device, dtype)
        parts = (self.pocket.backbone, self.pocket.head, self.pocket.decoder, self.pocket.encoder)
        self.num_params = sum(p.numel() for part in parts for p in part.parameters())  # (before packing)
        if packed is not None:
            pack_for_cpu(self.pocket.backbone, torch.float32)
            pack_for_cpu(self.pocket.head, torch.float32)
        self.cfg = self.pocket.cfg
        self.model = PocketNetwork(self.pocket)
        self.codec = MimiCodec(self.pocket)
        self.tokenizer = PocketTokenizer(self.pocket)
        self.has_timings = False
        self.guides_voice = False
        self.language = checkpoint_language(model_dir)
        self.name = f"pocket-tts ({Path(model_dir).name})"
        self.max_reference_frames = 0

    def default_sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.cfg.default_temperature)

    def voice_identity(self) -> str:
        return f"pocket-tts|{self.codec.identity}"

    def make_voice(self, wave: torch.Tensor, transcript: str, key: bytes) -> VoicePrompt:
        """The transcript is not used: the model clones from the audio alone."""
        latents = self.codec.encode(wave)
        net = self.model
        rows = [net.frame(net.VOICE_BOS)] if self.pocket.backbone.voice_bos is not None else []
        rows += [net.frame(net.VOICE, latent) for latent in latents]
        return VoicePrompt(torch.stack(rows), key)

    def plan(self, voice: VoicePrompt, text: str, sampling: SamplingParams) -> Plan:
        chunks = self.tokenizer.chunks(text)
        if not chunks:
            raise NothingToSay(f"nothing to speak in {text!r}" if text.strip() else "text to speak is empty")
        # The reference speaks each chunk of <= 50 tokens from a fresh copy of the voice
        # state; the service cuts utterances at sentences, and a longer sentence is spoken
        # here as one chunk (its chunks' tokens in order).
        tokens = [t for c in chunks for t in c.tokens]
        net = self.model
        text_rows = net.pad_frame.repeat(len(tokens), 1)
        text_rows[:, 0] = torch.tensor(tokens, dtype=torch.long)
        prompt = torch.cat([voice.frames, text_rows, net.frame(net.LATENT_BOS)[None]])
        after = chunks[-1].frames_after_eos  # (from the word count of the chunk it ends on)
        return Plan(prompt, max_frames(len(tokens), self.codec.frame_rate), 0, [], [], state=StopRule(after))

    def step(self, seqs: list[Sequence], hidden: torch.Tensor) -> Step:
        bb, net = self.pocket.backbone, self.model
        z = bb.cond(hidden)
        eos = (bb.eos_logit(z) > self.cfg.default_eos_threshold).tolist()
        ended = []
        for seq, is_eos in zip(seqs, eos):
            ended.append(seq.family_state.ends_at(seq.num_generated, is_eos and not seq.sampling.ignore_eos))
        # Noise only for the rows that go on, each from its own generator: a request's
        # draws do not depend on its neighbours.
        live = [b for b, e in enumerate(ended) if not e]
        latents: list[torch.Tensor | None] = [None] * len(seqs)
        frames = net.pad_frame.repeat(len(seqs), 1)
        if live:
            rows = [scaled_noise([seqs[b].generator], seqs[b].sampling.temperature, net.latent_dim) for b in live]
            noise = torch.cat(rows).to(z.dtype)
            sampled = self.pocket.head.sample(z[live], noise).float().cpu()
            for b, latent in zip(live, sampled):
                latents[b] = latent
                frames[b] = net.frame(net.LATENT, latent)
        return Step(frames, latents, [None] * len(seqs), ended)
