"""Scoring outputs against their lines and references, and pooling several seeds."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.eval.judge import SR, Judge, cosine, word_errors


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
            lines.append(
                {
                    "voice": name,
                    "text": r["text"],
                    "category": r.get("category"),
                    "heard": heard.strip(),
                    "errors": e,
                    "words": t,
                }
            )
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
