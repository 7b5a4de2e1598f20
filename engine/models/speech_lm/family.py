"""The speech-token LM as a model family (engine.runtime.family).

Frames are a channel-0 text/control token plus one token per codec codebook; the
head is one logit vector per channel, drawn by the batched sampler; the text
pointer decides what channel 0 may say and reads back; speech stops on the `eos`
token (never before the last text unit) or at the length guard.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from engine.codecs.base import make_codec
from engine.config import EngineConfig, SamplingParams
from engine.models.speech_lm.durations import CONFIG_FILE as DURATIONS_FILE
from engine.models.speech_lm.durations import load_durations, schedule, trim_ending
from engine.models.speech_lm.model import load_model
from engine.models.speech_lm.pointer import TextPointer
from engine.models.speech_lm.prompt import utterance_prompt, voice_prefix
from engine.models.speech_lm.speaker import DIM as SPEAKER_DIM
from engine.models.speech_lm.speaker import WEIGHTS_FILE as SPEAKER_WEIGHTS
from engine.models.speech_lm.speaker import SpeakerEncoder
from engine.packed import pack_for_cpu
from engine.runtime.family import Plan, Step
from engine.runtime.outputs import NothingToSay
from engine.runtime.sampler import codebook_probs, sample_frames
from engine.runtime.sequence import Sequence
from engine.runtime.voice import VoicePrompt
from engine.text.tokenizer import make_tokenizer, quiet_tail
from engine.weights import tensor_digest


class SpeechLMFamily:
    def __init__(
        self,
        model_dir: str | Path,
        config: EngineConfig,
        device: torch.device,
        dtype: torch.dtype,
        packed: tuple[torch.dtype, bool] | None = None,
    ):
        """`packed`: (dtype of the pre-packed CPU weights, whether the LM's linears are int8)
        when the engine runs on packed kernels (engine.packed), else None."""
        self.config = config
        self.model = load_model(model_dir, device, dtype)
        # An adapter tuned on the LM's rendering depends on the LM's weights (as loaded, before packing).
        adapt = config.adapt
        self._lm_digest = tensor_digest(self.model.state_dict())[:8] if adapt.steps and adapt.lm_share else ""
        self.cfg = cfg = self.model.cfg
        self.num_params = sum(p.numel() for p in self.model.parameters())  # (before packing swaps them)
        self.model.fuse_for_inference()
        if packed is not None:
            pack_for_cpu(self.model, packed[0], int8_linears=packed[1])
        # How to build this codec again in another process (engine.runtime.audio_process).
        codec_packed = packed[0] if packed else None
        self.codec_factory = partial(make_codec, cfg.codec, cfg.frame_rate, model_dir, packed=codec_packed)
        self.codec = self.codec_factory()
        self.tokenizer = make_tokenizer(cfg.tokenizer, cfg.text_vocab)
        self.pointer = TextPointer(cfg, self.model.max_vocab, device)
        self.durations = load_durations(model_dir) if cfg.generation.timing == "durations" else None
        if cfg.generation.timing == "durations" and self.durations is None:
            raise ValueError(f"{model_dir}: generation.timing is 'durations' but there is no {DURATIONS_FILE}")
        # Decode each frame from the expectation its codes were drawn from, where the codec can.
        self.expected_latents = config.stream.expected_latents and hasattr(self.codec, "expected_latent")
        self.adapts = hasattr(self.codec, "adapt") and config.adapt.steps > 0
        # The LM speaking a line in a voice, per frame what the codec decodes: set by the Engine
        # that runs this family, for adaptation on the LM's own rendering (AdaptConfig.lm_share).
        self.speak: Callable[[VoicePrompt, str], torch.Tensor] | None = None
        self.has_timings = cfg.advance is not None
        self.guides_voice = True
        self.language = cfg.language
        self.name = cfg.description or cfg.codec
        self.max_reference_frames = cfg.max_reference_frames
        # Reads each voice's speaker-encoder vector beside its codes (engine.models.speech_lm.speaker).
        self.speaker_encoder = None
        if cfg.speaker_dim:
            if cfg.speaker_dim != SPEAKER_DIM:
                raise ValueError(f"{model_dir}: speaker_dim {cfg.speaker_dim}; the speaker encoder gives {SPEAKER_DIM}")
            self.speaker_encoder = SpeakerEncoder.load(Path(model_dir) / SPEAKER_WEIGHTS)
            self._speaker_digest = tensor_digest(self.speaker_encoder.state_dict())[:8]

    def default_sampling(self) -> SamplingParams:
        gen = self.cfg.generation
        return SamplingParams(temperature=gen.temperature, top_k=gen.top_k, voice_guidance=gen.voice_guidance)

    def voice_identity(self) -> str:
        adapted = "noadapt"
        if self.adapts:
            adapted = f"{self.config.adapt.identity}-{self.codec.decoder_digest}{self._lm_digest}"
        speaker = f"|speaker-{self._speaker_digest}" if self.speaker_encoder is not None else ""
        return f"{self.codec.identity}|{self.cfg.tokenizer}|{adapted}{speaker}"

    def make_voice(self, wave: torch.Tensor, transcript: str, key: bytes) -> VoicePrompt:
        ids = self.tokenizer.encode(transcript)
        if not ids:
            raise ValueError("the reference transcript is empty")
        codes = self.codec.encode(wave)
        prompt = voice_prefix(self.cfg, ids, codes)
        speaker = None
        if self.speaker_encoder is not None:  # from the recording itself, not its codec round trip
            speaker = self.speaker_encoder.embed([wave], self.codec.sample_rate)
        if not self.adapts:
            return VoicePrompt(prompt, key, speaker=speaker)
        # The codec tuned to this voice (seconds of CPU, once per voice; see engine.codecs.adapt),
        # on what the LM says in it too where the engine can make it speak.
        spoken = None
        if self.config.adapt.lm_share and self.speak is not None:
            spoken = self.speak(VoicePrompt(prompt, key, speaker=speaker), transcript)
        return VoicePrompt(prompt, key, self.codec.adapt(wave, self.config.adapt, spoken), speaker)

    def plan(self, voice: VoicePrompt, text: str, sampling: SamplingParams) -> Plan:
        ids, spans = self.tokenizer.encode_spans(text)
        if not ids:
            raise NothingToSay(f"nothing to speak in {text!r}" if text.strip() else "text to speak is empty")
        cfg, gen = self.cfg, self.cfg.generation
        timing = None
        if self.durations is not None:
            quiet = quiet_tail(self.tokenizer, ids)
            seconds = trim_ending(self.durations.seconds(ids), quiet, gen.max_last_unit_s, gen.max_final_pause_s)
            pace = gen.pace or self.voice_pace(voice)
            timing = schedule([s * pace for s in seconds], cfg.frame_rate, cfg.mark_delay_frames)
            if gen.silence_frame:
                timing = timing.prefilled()
        lead = timing.lead if timing else 0
        unvoiced = None
        if sampling.voice_guidance:  # the same text and lead after a voice prefix of bos alone
            bos_alone = voice_prefix(cfg, [], torch.zeros((0, cfg.num_codebooks), dtype=torch.long))
            unvoiced = utterance_prompt(cfg, VoicePrompt(bos_alone, b""), ids, lead)
        return Plan(
            prompt=utterance_prompt(cfg, voice, ids, lead),
            max_frames=math.ceil(len(ids) * gen.max_frames_per_text_token) + gen.min_frames_guard,
            min_frames=math.ceil(len(ids) * gen.min_frames_per_text_token),
            spans=spans,
            units=[self.tokenizer.symbol(i) for i in ids],
            state=timing,
            unvoiced=unvoiced,
        )

    def voice_pace(self, voice: VoicePrompt) -> float:
        """How much slower than the duration model's neutral pace the voice's reference is spoken."""
        text = voice.frames[1:, 1] == self.cfg.audio_pad  # the prefix: bos, transcript, then audio
        n_text = int(text.int().argmin()) if not bool(text.all()) else len(text)
        ids = voice.frames[1 : 1 + n_text, 0].tolist()
        return self.durations.pace(ids, voice.num_frames - 1 - n_text)

    def step(self, seqs: list[Sequence], hidden: torch.Tensor, unvoiced: torch.Tensor | None = None) -> Step:
        logits = self.model.logits(hidden).cpu()
        if unvoiced is not None:
            # Classifier-free guidance on the codebooks (channel 0 is the pointer's): the voice's
            # logits pushed further from the voiceless ones. An unguided row has weight 0 and
            # its own hidden state as `unvoiced`, so its logits stay exactly as they were.
            weight = torch.tensor([s.sampling.voice_guidance for s in seqs]).view(-1, 1, 1)
            voiced, voiceless = logits[:, 1:], self.model.logits(unvoiced).cpu()[:, 1:]
            guided = voiced + weight * (voiced - voiceless)
            logits[:, 1:] = torch.where(torch.isfinite(voiced), guided, voiced)  # (-inf - -inf is nan)
        self.pointer.constrain(seqs, logits)
        params = [s.sampling for s in seqs]
        frames = sample_frames(
            logits, params, [s.generator for s in seqs], [s.generated() for s in seqs], slice(1, None)
        )
        latents: list[torch.Tensor | None] = [None] * len(seqs)
        if self.expected_latents:  # what the codec decodes: the expectation the draws came from
            latents = list(self.codec.expected_latent(codebook_probs(logits, frames, params, self.cfg.codebook_size)))
        sampled, marks = self.pointer.feed(seqs, frames)
        return Step(frames, latents, marks, [ch0 == self.cfg.eos for ch0 in sampled])
