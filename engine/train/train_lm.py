"""Train the speech LM on teacher data tokenised by the trained codec.

    python -m engine.train.token_store --codec engine/checkpoints/default       # tokenise new teacher shards
    python -m engine.train.train_lm --minutes 60                           # resumes from its checkpoint
    python -m engine.train.train_lm --init engine/checkpoints/default --minutes 60   # or start from a shipped model
    python -m engine.train.train_lm --export engine/checkpoints/default         # config.json + model.safetensors
    python -m engine.train.train_lm --export engine/checkpoints/default --average 3   # the mean of the last 3 saves

Training reads the tokens committed in engine/train/tokens (token_store). Each
example is one utterance of a voice prompted by another utterance of the
same voice (the voice prefix), laid out by engine.train.lm_data exactly as the
engine runs it. Loss: cross-entropy on channel 0 (stay / advance / stop) and on
every codebook of the next frame, over the generated part only.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.config import CACHE_ROOT
from engine.models.speech_lm.config import GenerationConfig, ModelConfig
from engine.models.speech_lm.model import CONFIG_FILE, WEIGHTS_FILE, SpeechLM, save_model
from engine.models.speech_lm.speaker import DIM as SPEAKER_DIM
from engine.models.speech_lm.speaker import WEIGHTS_FILE as SPEAKER_WEIGHTS
from engine.packed import native_bf16
from engine.train.augment_tokens import source_voice
from engine.train.lm_data import IGNORE, build_example
from engine.train.snapshots import average_last, keep_snapshot, save_checkpoint
from engine.train.speaker_vectors import load_vectors
from engine.train.token_store import TOKENS, check_stamp, load_token_shard
from engine.weights import load_weights

WORK = CACHE_ROOT / "train" / "lm"
DELAY = 3  # frames a unit is fed before its audio (120 ms of lookahead)


def model_config(
    dim: int, layers: int, codebooks: int, codebook_size: int, max_ref_frames: int = 250, speaker_dim: int = 0
) -> ModelConfig:
    return ModelConfig(
        dim=dim,
        n_layers=layers,
        n_heads=dim // 64,
        n_kv_heads=max(1, dim // 192),
        ffn_dim=dim * 8 // 3 // 32 * 32,
        max_positions=2048,
        text_vocab=128,
        num_codebooks=codebooks,
        codebook_size=codebook_size,
        advance=4,
        mark_delay_frames=DELAY,
        hold_units=True,
        max_reference_frames=max_ref_frames,
        speaker_dim=speaker_dim,
        frame_rate=25.0,
        codec="mel",
        tokenizer="phonemes",
        description="speech LM trained on teacher voices (engine/train)",
        generation=GenerationConfig(
            temperature=0.5, max_frames_per_text_token=4.0, min_frames_guard=25, max_frames_per_unit=25
        ),
    )


class Examples:
    def __init__(
        self,
        token_dir: Path,
        cfg: ModelConfig,
        max_ref_frames: int,
        seed: int,
        per_voice: bool = False,
        no_voice: float = 0.0,
        speakers: bool = False,
    ):
        """`per_voice` draws a voice first, then one of its lines, so a voice with 28 lines
        is trained as often as one with 265: what matters for voices never heard is how
        many different speakers the model learns from, not how many lines each reads.
        A warped voice (augment_tokens) is drawn with its source voice, so warping keeps
        to half the draws however many variants it made.
        `no_voice`: the share of examples given an empty voice prefix (bos alone), so the
        model also learns to speak with no voice to copy: the unconditional half of
        guidance on the voice (GenerationConfig.voice_guidance).
        `speakers`: each example also carries its voice's speaker-encoder vector, from
        <token_dir>/speakers.npz (engine.train.speaker_vectors); zeros with no voice prefix."""
        self.cfg, self.token_dir, self.per_voice, self.no_voice = cfg, token_dir, per_voice, no_voice
        self.speakers = load_vectors(token_dir) if speakers else None
        self.by_voice: dict[str, list[dict]] = defaultdict(list)
        self.shards: set[str] = set()
        if not self.load_new():
            raise SystemExit(f"no tokenised data in {token_dir}: run engine.train.token_store first")
        self.max_ref = max_ref_frames
        self.rng = random.Random(seed)
        self.skipped = 0
        self.ready: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def load_new(self) -> int:
        """Add shards tokenised since the last call (synthesis may run beside training);
        returns how many."""
        new = [p for p in sorted(self.token_dir.glob("shard_*.npz")) if p.name not in self.shards]
        for path in new:
            for r in load_token_shard(path):
                self.by_voice[r["voice"]].append(r)
            self.shards.add(path.name)
        self.voices = [v for v, rs in self.by_voice.items() if len(rs) > 1]
        if self.speakers is not None and (lacking := [v for v in self.voices if v not in self.speakers]):
            raise SystemExit(
                f"{len(lacking)} voices in {self.token_dir} have no speaker vector (e.g. {lacking[0]}): "
                "run engine.train.speaker_vectors first"
            )
        sources: dict[str, list[dict]] = defaultdict(list)
        for v in self.voices:
            sources[source_voice(v)] += self.by_voice[v]
        self.sources = list(sources.values())
        self.utts = [r for rs in self.sources for r in rs]
        return len(new)

    def draw(self) -> dict:
        """The next line to train on (a voice with a single line has no prompt and is never drawn)."""
        return self.rng.choice(self.rng.choice(self.sources) if self.per_voice else self.utts)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input frames, targets and the voice's speaker vector (empty without `speakers`)."""
        while True:
            utt = self.draw()
            refs = [r for r in self.by_voice[utt["voice"]] if r is not utt and len(r["codes"]) <= self.max_ref]
            ref = self.rng.choice(refs or [r for r in self.by_voice[utt["voice"]] if r is not utt])
            speaker = torch.from_numpy(self.speakers[utt["voice"]]) if self.speakers is not None else torch.zeros(0)
            if self.no_voice and self.rng.random() < self.no_voice:
                ref = {"ids": [], "codes": utt["codes"][:0]}
                speaker = torch.zeros_like(speaker)
            try:
                return *build_example(
                    self.cfg,
                    ref["ids"],
                    ref["codes"][: self.max_ref],
                    utt["ids"],
                    utt["codes"],
                    utt["durations"],
                    DELAY,
                ), speaker
            except ValueError:  # more units than frames (a teacher glitch): draw another
                self.skipped += 1

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Frames, targets and speaker vectors [size, dim] (None without `speakers`)."""
        # Examples are drawn 8 batches at a time and grouped by length, so a batch
        # pads little (about a third fewer positions to compute than random batches).
        if not self.ready:
            pool = sorted((self.sample() for _ in range(8 * size)), key=lambda p: len(p[0]))
            self.ready = [pool[i : i + size] for i in range(0, len(pool), size)]
            self.rng.shuffle(self.ready)
        pairs = self.ready.pop()
        T = max(len(f) for f, _, _ in pairs)
        frames = torch.full((size, T, self.cfg.num_channels), self.cfg.audio_pad, dtype=torch.long)
        frames[..., 0] = self.cfg.text_pad
        targets = torch.full((size, T, self.cfg.num_channels), IGNORE, dtype=torch.long)
        for i, (f, t, _) in enumerate(pairs):
            frames[i, : len(f)], targets[i, : len(t)] = f, t
        return frames, targets, (torch.stack([p[2] for p in pairs]) if self.speakers is not None else None)


def drop_audio(frames: torch.Tensor, targets: torch.Tensor, p: float, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Blank the audio channels of a share `p` of the generated frames (inputs only).

    Next-frame prediction can lean on the previous frames alone and barely read the
    text; with some of them missing, the model must take what to say from channel 0
    (the same reason Tacotron keeps dropout on in its decoder prenet)."""
    if p <= 0:
        return frames
    generated = (targets[..., 1] != IGNORE).roll(1, dims=1)  # frames that were targets: speech inputs
    drop = generated & (torch.rand(generated.shape, generator=gen) < p)
    out = frames.clone()
    out[..., 1:][drop] = pad
    return out


def self_feed(
    model: SpeechLM,
    frames: torch.Tensor,
    targets: torch.Tensor,
    p: float,
    temperature: float,
    gen: torch.Generator,
    bf16: bool = False,
    speaker: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace the audio inputs of a share `p` of the generated frames by the model's own
    draws for them (inputs only; the targets stay the teacher's).

    Served, the LM reads back codes it drew at `temperature` from eight independent
    heads, combinations no teacher frame ever had; trained only on teacher frames it
    never learns to recover from them (free-running wer 0.167 against 0.097 with
    teacher frames, for the 16,600-step LM). One extra forward pass without gradients draws the
    frames it would have fed itself (scheduled sampling, one step deep)."""
    if p <= 0:
        return frames
    B, T, _ = frames.shape
    was_training = model.training
    model.eval()  # draw as served: no dropout
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = model(frames, torch.arange(T).expand(B, T), speaker=speaker)
        logits = torch.stack([head(hidden) for head in model.heads[1:]], dim=2).float()
    model.train(was_training)
    probs = (logits / temperature).softmax(-1)
    draws = torch.multinomial(probs.flatten(0, 2), 1, generator=gen).view(B, T, -1)
    generated = (targets[..., 1] != IGNORE).roll(1, dims=1)  # as in drop_audio: inputs that were targets
    swap = generated & (torch.rand(generated.shape, generator=gen) < p)
    out = frames.clone()
    out[..., 1:][swap] = draws.roll(1, dims=1)[swap]  # the draw at t is the input at t + 1
    return out


def lm_loss(
    model: SpeechLM,
    frames: torch.Tensor,
    targets: torch.Tensor,
    bf16: bool = False,
    speaker: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float]]:
    B, T, C = frames.shape
    # bf16 autocast: ~3x faster matmuls on this CPU (avx512_bf16); the losses stay float32.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = model(frames, torch.arange(T).expand(B, T), speaker=speaker)
        logits = [head(hidden) for head in model.heads]
    losses = [
        F.cross_entropy(logit.flatten(0, 1).float(), targets[..., c].flatten(), ignore_index=IGNORE)
        for c, logit in enumerate(logits)
    ]
    return losses[0] + torch.stack(losses[1:]).mean(), [x.item() for x in losses]


def check_codec(model_dir: Path, token_dir: Path) -> None:
    """Refuse to pair the LM with a codec whose encoder did not make its training tokens."""
    from engine.codecs.mel import MelCodec

    if not (model_dir / "codec.safetensors").exists():
        raise SystemExit(f"{model_dir} has no codec: export the codec there first")
    check_stamp(token_dir, MelCodec(model_dir).encoder_digest)


def plot_curves(log_path: Path, val_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(steps, [float(r["ch0"]) for r in rows], label="channel 0 (stay / advance / stop)", alpha=0.8)
    ax.plot(steps, [float(r["codes"]) for r in rows], label="codebooks (mean)", alpha=0.8)
    if val_path.exists():
        val = list(csv.DictReader(open(val_path)))
        vsteps = [int(r["step"]) for r in val]
        ax.plot(vsteps, [float(r["ch0"]) for r in val], "C0--o", ms=3, label="channel 0, held-out")
        ax.plot(vsteps, [float(r["codes"]) for r in val], "C1--o", ms=3, label="codebooks, held-out")
    ax.set(title="speech LM training loss", xlabel="step", ylabel="cross-entropy (nats)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=Path, default=TOKENS, help="dir with the train/ and eval/ token shards")
    ap.add_argument("--work", type=Path, default=WORK, help="checkpoint and loss logs")
    ap.add_argument("--codec", type=Path, help="model dir with codec.json + codec.safetensors")
    ap.add_argument("--init", type=Path, help="with no checkpoint yet, start from this exported model's weights")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6, help="a new run's depth (a resumed run must be given its own)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.1, help="residual dropout")
    ap.add_argument("--drop-audio", type=float, default=0.1, help="share of input audio frames blanked")
    ap.add_argument(
        "--self-feed",
        type=float,
        default=0.0,
        help="share of generated input frames replaced by the model's own draws (see self_feed)",
    )
    ap.add_argument("--per-voice", action="store_true", help="draw source voices evenly, not lines (see Examples)")
    ap.add_argument("--no-voice", type=float, default=0.0, help="share of examples with no voice prefix (Examples)")
    ap.add_argument("--max-ref-frames", type=int, default=250, help="longest reference clip (10 s)")
    ap.add_argument("--warmup", type=int, default=500, help="steps of linear learning-rate warmup")
    ap.add_argument("--speaker-lr-scale", type=float, default=20.0, help="the speaker projection's rate over --lr")
    ap.add_argument(
        "--speaker",
        type=Path,
        help="speaker encoder weights: condition on each voice's vector (engine.train.speaker_vectors made "
        "them with these weights); --export copies them beside the model",
    )
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--keep", type=int, default=3, help="weight snapshots kept from the last saves, for --average")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--fp32",
        action="store_true",
        help="train without bf16 autocast (always so on a CPU without native bfloat16, where it is emulated: "
        "65 s a step against 4 s in float32 on a 2-core AVX2 EPYC)",
    )
    ap.add_argument("--export", type=Path, help="write config.json + model.safetensors (int8) beside the codec here")
    ap.add_argument("--average", type=int, default=1, help="with --export: the mean of the last N kept snapshots")
    ap.add_argument("--plot", type=Path, help="draw the training curves to this PNG and exit")
    args = ap.parse_args()
    token_dir, ckpt_path, log_path = args.tokens / "train", args.work / "checkpoint.pt", args.work / "losses.csv"
    val_dir, val_path = args.tokens / "eval", args.work / "val_losses.csv"  # held-out voices and lines
    if args.plot:
        plot_curves(log_path, val_path, args.plot)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bf16 = not args.fp32 and native_bf16()
    if not (bf16 or args.fp32):
        print("this CPU has no native bfloat16: training in float32", file=sys.stderr)
    codec_dir = args.codec or args.export or args.init
    codec_cfg = (
        json.loads((codec_dir / "codec.json").read_text()) if codec_dir else {"groups": 8, "levels": [4, 4, 4, 4]}
    )
    state = torch.load(ckpt_path, weights_only=False) if ckpt_path.exists() else None
    cfg = model_config(
        args.dim,
        args.layers,
        codec_cfg["groups"],
        int(np.prod(codec_cfg["levels"])),
        args.max_ref_frames,
        speaker_dim=SPEAKER_DIM if args.speaker else 0,
    )
    model = SpeechLM(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = args.dropout
    # The speaker projection starts at zero beside a trained network whose first-frame embedding
    # has a norm of ~22; at the network's rate it had grown to move that frame by 0.3% after 400
    # steps, too little for the LM to read. Its own group learns `--speaker-lr-scale` times faster.
    speaker_params = [model.speaker_proj.weight] if model.speaker_proj is not None else []
    others = [p for n, p in model.named_parameters() if not n.startswith("speaker_proj.")]
    groups = [{"params": others, "scale": 1.0}]
    if speaker_params:
        groups.append({"params": speaker_params, "scale": args.speaker_lr_scale})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    step = 0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    elif args.init:
        # A new machine has no checkpoint; a shipped model (int8, dequantised) is the
        # next best start. The optimiser's moments start afresh, hence the warmup.
        # A model gaining speaker conditioning starts with its projection at zero.
        missing, unexpected = model.load_state_dict(load_weights(args.init / WEIGHTS_FILE), strict=False)
        if unexpected or set(missing) - {"speaker_proj.weight"}:
            raise SystemExit(f"{args.init} does not fit this model: missing {missing}, unexpected {unexpected}")
        print(f"starting from the weights in {args.init}")
    if args.export:
        check_codec(args.export, token_dir)
        what = f"step {step}"
        if args.average > 1:
            weights, steps = average_last(args.work, args.average)
            model.load_state_dict(weights)
            what = f"the mean of steps {', '.join(map(str, steps))}"
        if (args.export / CONFIG_FILE).exists():
            # Keep how the exported model is decoded (timing, pace, lead frame): they were chosen
            # for it on dev, and the training config knows nothing of them.
            model.cfg = replace(model.cfg, generation=ModelConfig.load(args.export / CONFIG_FILE).generation)
        save_model(model.eval(), args.export, int8=True)
        if args.speaker:
            shutil.copyfile(args.speaker, args.export / SPEAKER_WEIGHTS)
        print(f"exported {what} to {args.export}")
        return
    speakers = args.speaker is not None
    data = Examples(
        token_dir,
        cfg,
        args.max_ref_frames,
        seed=step,
        per_voice=args.per_voice,
        no_voice=args.no_voice,
        speakers=speakers,
    )
    print(
        f"{len(data.utts)} utterances of {len(data.voices)} voices ({len(data.sources)} sources)"
        f" in {len(data.shards)} token shards; starting at step {step}"
    )
    drop_gen = torch.Generator().manual_seed(step)
    # The same few held-out batches every time, so the curve compares like with like.
    val_batches = []
    if val_dir.exists():
        val = Examples(val_dir, cfg, args.max_ref_frames, seed=1234, speakers=speakers)
        val_batches = [val.batch(args.batch) for _ in range(4)]

    def save() -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step})
        keep_snapshot(args.work, step, model.state_dict(), args.keep)
        if added := data.load_new():
            tqdm.write(f"step {step}: {added} new token shards, {len(data.utts)} utterances")
        if not val_batches:
            return
        model.eval()
        with torch.no_grad():
            parts = np.mean([lm_loss(model, f, t, bf16, s)[1] for f, t, s in val_batches], axis=0)
        model.train()
        new = not val_path.exists()
        with open(val_path, "a", newline="") as f:
            if new:
                f.write("step,ch0,codes\n")
            f.write(f"{step},{parts[0]:.4f},{np.mean(parts[1:]):.4f}\n")

    # Warmup, then constant, then a linear decay over the last 20% of --steps: a run
    # stopped by --minutes can resume, and a later, longer --steps simply extends it.
    decay_from = 0.8 * args.steps
    sched = lambda s: (
        min(1.0, (s + 1) / args.warmup) * max(0.05, min(1.0, (args.steps - s) / (args.steps - decay_from)))
    )
    new_log = not log_path.exists()
    args.work.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "ch0", "codes", "seconds"])
    deadline, t0 = time.time() + args.minutes * 60, time.time()
    bar = tqdm(total=args.steps, initial=step, desc="lm", unit="step")
    model.train()
    while step < args.steps and time.time() < deadline:
        for g in opt.param_groups:
            g["lr"] = args.lr * g.get("scale", 1.0) * sched(step)  # (no scale: a checkpoint from before)
        frames, targets, speaker = data.batch(args.batch)
        frames = self_feed(model, frames, targets, args.self_feed, cfg.generation.temperature, drop_gen, bf16, speaker)
        frames = drop_audio(frames, targets, args.drop_audio, cfg.audio_pad, drop_gen)
        loss, parts = lm_loss(model, frames, targets, bf16, speaker)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update()
        if step % 10 == 0:
            writer.writerow(
                [
                    step,
                    round(loss.item(), 4),
                    round(parts[0], 4),
                    round(float(np.mean(parts[1:])), 4),
                    round(time.time() - t0, 1),
                ]
            )
            log.flush()
            bar.set_postfix(loss=f"{loss.item():.3f}", ch0=f"{parts[0]:.3f}")
        if step % args.save_every == 0:
            save()
    if step % args.save_every:  # (a multiple was saved, and validated, inside the loop)
        save()
    print(f"stopped at step {step}; checkpoint {ckpt_path}; {data.skipped} glitched examples skipped")


if __name__ == "__main__":
    main()
