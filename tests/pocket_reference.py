"""The reference pocket-tts (Kyutai, MIT, `pocket-tts==4.0.1`) with seeded random weights, for numeric tests.

The real checkpoints are on a hub this machine cannot reach, so a test builds the reference from one of the
package's own YAML configs, gives it seeded random weights and writes the folder a user would have after a
download: `config.yaml` pointing at local files, `model.safetensors` (the `TTSModel` state dict, the file the
package itself writes with POCKET_TTS_SAVE_WEIGHTS=1) and a tokenizer of the kind the config names.

Importing pocket_tts calls `torch.set_num_threads(1)`. `reference()` imports it and puts the caller's thread
count back; `run_isolated` runs a function in a fresh process, so the reference cannot touch the test process
(threads, global RNG draws, memory) at all.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import torch

if TYPE_CHECKING:
    from pocket_tts import TTSModel

T = TypeVar("T")

DEFAULT_CONFIG = "english"  # 6 x 1024 backbone, LSD flow head, tokenizer.json
SMALL_CONFIG = "english_2m_2026-10"  # GQA, z_proj, low-rank text table, pointwise head, SentencePiece .model
SAMPLE_RATE = 24000

# The tokenizer only has to be valid and deterministic, not good: these sentences support a few dozen learned
# pieces, and control symbols (ids that no text can produce) fill the table up to the config's n_bins.
_TOKENIZER_TEXT = (
    "Hello world. I am a tiny tokenizer trained for tests.",
    "The quick brown fox jumps over the lazy dog!",
    "Is this the right way to the old castle, traveler?",
    "We need numbers like 3.14 and 42; also colons: yes.",
    "Welcome back, hero. The village is safe again...",
)
_LEARNED_PIECES = 64
# A benchmark needs realistic token counts instead: a text prefill of one token per character would overstate
# the warm path several times over. `english_text` learns all n_bins pieces from this many sentences of general
# English and game dialogue (~1.7 tokens per word, against the 64-piece table's ~4).
_ENGLISH_SENTENCES = (20000, 5000)


def reference() -> ModuleType:
    """Import pocket_tts without keeping the `torch.set_num_threads(1)` its import performs."""
    threads = torch.get_num_threads()
    # Every path the tests give it is local; never let it reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pocket_tts

    torch.set_num_threads(threads)
    return pocket_tts


def run_isolated(fn: Callable[..., T], *args: Any) -> T:
    """Run the module-level function `fn(*args)` in a fresh spawned process and return its (picklable) result."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def english_text() -> list[str]:
    """Sentences to learn a full-size tokenizer from: general English (the trainer's `BroadText`) and game lines."""
    from engine.train.corpus import BroadText, lines

    broad, game = _ENGLISH_SENTENCES
    return [raw for raw, _ in BroadText().lines(broad, seed=1)] + [raw for raw, _ in lines(game, seed=1)]


def write_tokenizer(kind: str, n_bins: int, out_dir: Path, text: list[str] | None = None) -> Path:
    """A unigram SentencePiece model with exactly n_bins ids; as tokenizer.json too when the config asks for one.

    Learned from `text` when given (every id a learned piece), else from a few sentences (64 learned pieces,
    control symbols fill the rest). The JSON twin mirrors SentencePiece's defaults (whitespace stripped and
    collapsed, '▁' prepended, split on whitespace), so both files give the same ids for ordinary text."""
    import sentencepiece as spm

    buf = io.BytesIO()
    fill = [] if text else [f"<unused{i}>" for i in range(n_bins - _LEARNED_PIECES)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text or _TOKENIZER_TEXT), model_writer=buf, vocab_size=n_bins, model_type="unigram",
        character_coverage=1.0, normalization_rule_name="identity", bos_id=-1, eos_id=-1, unk_id=0,
        control_symbols=fill, num_threads=1, minloglevel=2,
    )  # fmt: skip
    if kind == "sentencepiece":
        path = out_dir / "tokenizer.model"
        path.write_bytes(buf.getvalue())
        return path
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.vocab_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    path = out_dir / "tokenizer.json"
    tok.save(str(path))
    return path


def _randomise_constants(model: torch.nn.Module, seed: int) -> None:
    """Give every constant-initialised float tensor seeded random values, in place.

    Linear and conv weights already come from torch's seeded default init. What starts constant (the zero
    speaker_proj_weight, LayerNorm/RMSNorm affines, LayerScale, emb_std/emb_mean) would make a comparison
    blind to whether it is applied at all. Each tensor gets its own generator, keyed by its name."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            flat = t.flatten()
            if not t.is_floating_point() or t.numel() == 0 or not bool((flat == flat[0]).all()):
                continue
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            noise = torch.randn(t.shape, generator=g, dtype=t.dtype)
            c = float(flat[0])
            if c == 0.0:
                t.copy_(noise * (1 / math.sqrt(t.shape[-1]) if t.dim() >= 2 else 0.1))
            else:
                t.copy_(c * (1 + 0.1 * noise))  # keeps the sign: emb_std and norm gains stay positive


def build_checkpoint(config_name: str, out_dir: Path, seed: int = 0, english_tokenizer: bool = False) -> Path:
    """Write a random-weight checkpoint folder for the shipped config `config_name`; returns its config.yaml.
    `english_tokenizer`: learn the tokenizer from `english_text()` (for benchmarks) instead of a few sentences.

    Paths in the YAML are absolute: the package resolves local paths against the working directory."""
    import yaml  # pocket_tts imports PyYAML too, without declaring it

    pocket_tts = reference()
    from pocket_tts.utils.config import CONFIGS_DIR

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((CONFIGS_DIR / f"{config_name}.yaml").read_text(encoding="utf-8"))
    cfg.pop("weights_path", None)
    cfg.pop("weights_path_without_voice_cloning", None)
    lut = cfg["flow_lm"]["lookup_table"]
    text = english_text() if english_tokenizer else None
    lut["tokenizer_path"] = str(write_tokenizer(lut["tokenizer"], lut["n_bins"], out_dir, text))
    config_path = out_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")

    torch.manual_seed(seed)
    model = pocket_tts.TTSModel.load_model(config=config_path)  # no weights_path yet: default init
    _randomise_constants(model, seed)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    cfg["weights_path"] = str(out_dir / "model.safetensors")
    config_path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return config_path


def load_reference(config_path: Path, **kwargs: Any) -> TTSModel:
    """Load a folder written by `build_checkpoint` through the public API (the package loads it strictly)."""
    return reference().TTSModel.load_model(config=Path(config_path), **kwargs)


def random_voice(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A [1, samples] 24 kHz voice prompt of seeded noise: steady loudness, so the prompt trimming keeps it all."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=g)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a random-weight pocket-tts folder (for engine.bench --model).")
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="a config shipped in the package (default: english)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--test-tokenizer", action="store_true", help="the tests' 64-piece tokenizer (about one token per character)"
    )
    args = ap.parse_args()
    print(build_checkpoint(args.config, args.out, args.seed, english_tokenizer=not args.test_tokenizer))
