"""Text for the FlowLM: the checkpoint's tokenizer, its normalisation and sentence chunking.

The model was trained on single sentences, so a request is cut into chunks of at most
`MAX_CHUNK_TOKENS` tokens at sentence ends (then at commas, for a sentence that alone is too
long), and each chunk is generated from the voice prefix on its own. A chunk's tokens come
from re-encoding its text, not from slicing the whole request's tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.models.pocket_tts.config import PocketConfig, TextTableConfig

MAX_CHUNK_TOKENS = 50
_SENTENCE_END = ".!?\u2026"
_WEAK_END = ",;:-\u2013\u2014"  # a trailing one of these becomes a period
_CLOSERS = "\"'\u201d\u2019)]\u00bb"  # may follow the final mark
_MARK_THEN_PAUSE = re.compile(r"([.!?\u2026])\s*[,;:]")
_SENTENCE_PROBE, _CLAUSE_PROBE = ".!...?", ",;:"  # their ids, minus the leading word piece, are the cut ids


class Tokenizer:
    """The checkpoint's tokenizer: a HF `tokenizer.json` or a SentencePiece model. Adds no BOS/EOS."""

    def __init__(self, cfg: TextTableConfig):
        path = str(cfg.tokenizer_path)
        if cfg.is_json:
            from tokenizers import Tokenizer as HFTokenizer

            tok = HFTokenizer.from_file(path)
            self._encode = lambda text: tok.encode(text).ids
            self._decode = tok.decode
            size = tok.get_vocab_size()
        else:
            from sentencepiece import SentencePieceProcessor

            sp = SentencePieceProcessor(model_file=path)
            self._encode = lambda text: sp.encode(text, out_type=int)
            self._decode = sp.decode
            size = sp.vocab_size()
        if size != cfg.n_bins:
            raise ValueError(f"{path}: vocabulary of {size}, but the config says n_bins {cfg.n_bins}")

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._decode(ids)


@dataclass(frozen=True)
class TextRules:
    """The checkpoint's text settings (the top level of config.yaml)."""

    replace_characters: dict[str, str] = field(default_factory=dict)
    remove_semicolons: bool = False
    append_terminal_punctuation: bool = True
    capitalize_first_letter: bool = True
    pad_with_spaces_for_short_inputs: bool = False
    frames_after_eos: int | None = None  # the config's recommendation; None: from the word count

    @classmethod
    def of(cls, cfg: PocketConfig) -> TextRules:
        return cls(
            dict(cfg.replace_characters),
            cfg.remove_semicolons,
            cfg.append_terminal_punctuation,
            cfg.capitalize_first_letter,
            cfg.pad_with_spaces_for_short_inputs,
            cfg.model_recommended_frames_after_eos,
        )


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: list[int]
    frames_after_eos: int  # frames generated after the first accepted EOS


def _end_sentence(text: str) -> str:
    """Make `text` end in sentence-final punctuation, possibly followed by closing quotes/brackets."""
    core = text.rstrip(_CLOSERS + " ")
    if not core or core[-1] in _SENTENCE_END:
        return text
    if core[-1] in _WEAK_END:
        return core.rstrip(_WEAK_END + " ") + "." + text[len(core) :].strip()
    return text + "."


def normalize(text: str, rules: TextRules) -> tuple[str, int]:
    """The text a chunk is spoken from, and the guess of frames to add after EOS (3 for at most
    four words, else 1; the generator adds 2 to it)."""
    text = text.strip()
    if rules.replace_characters:
        text = " ".join(text.translate(str.maketrans(rules.replace_characters)).split())
        text = _MARK_THEN_PAUSE.sub(r"\1", text)  # a deleted quote can leave '?,' behind
    if not text:
        raise ValueError("text is empty")
    text = text.replace("\n", " ").replace("\r", " ").replace("  ", " ")  # one pass, like the reference
    if rules.remove_semicolons:
        text = text.replace(";", ",")
    guess = 3 if len(text.split()) <= 4 else 1
    if rules.capitalize_first_letter and not text[0].isupper():
        text = text[0].upper() + text[1:]
    if rules.append_terminal_punctuation:
        text = _end_sentence(text)
    if rules.pad_with_spaces_for_short_inputs and len(text.split()) < 5:
        text = " " * 8 + text
    return text, guess


def _cut_points(ids: list[int], stops: set[int], tok: Tokenizer | None = None) -> list[int]:
    """Indices that start a new segment: the first token after each run of `stops` (with `tok`,
    not where the run is a decimal point: '3.' then '14'), plus 0 and len(ids)."""
    cuts, after_stop = [0], False
    for i, t in enumerate(ids):
        if t in stops:
            after_stop = True
            continue
        if after_stop and not (tok is not None and _decimal_point(ids, i, tok)):
            cuts.append(i)
        after_stop = False
    return cuts + [len(ids)]


def _decimal_point(ids: list[int], i: int, tok: Tokenizer) -> bool:
    before, after = tok.decode(ids[:i]), tok.decode(ids[i:])
    return len(before) >= 2 and before[-1] == "." and before[-2].isdigit() and after[:1].isdigit()


def _segments(ids: list[int], cuts: list[int], tok: Tokenizer) -> list[tuple[int, str]]:
    return [(b - a, tok.decode(ids[a:b])) for a, b in zip(cuts, cuts[1:])]


def split_sentences(tok: Tokenizer, text: str, rules: TextRules, max_tokens: int = MAX_CHUNK_TOKENS) -> list[str]:
    """The request as chunk texts of whole sentences, each at most `max_tokens` tokens when it can
    be (nothing is dropped: a longer clause stays whole)."""
    ids = tok.encode(normalize(text, rules)[0].strip())
    segments = _segments(ids, _cut_points(ids, set(tok.encode(_SENTENCE_PROBE)[1:]), tok), tok)
    clause_stops = set(tok.encode(_CLAUSE_PROBE)[1:])
    pieces: list[tuple[int, str]] = []
    for n, sentence in segments:
        if n > max_tokens:  # too long alone: try its clauses
            sub = tok.encode(sentence.strip())
            parts = _segments(sub, _cut_points(sub, clause_stops), tok)
            if len(parts) > 1:
                pieces += parts
                continue
        pieces.append((n, sentence))
    chunks: list[str] = []
    current, count = "", 0
    for n, piece in pieces:
        if current and count + n > max_tokens:
            chunks.append(current.strip())
            current, count = "", 0
        current, count = (current + " " + piece, count + n) if current else (piece, n)
    if current:
        chunks.append(current.strip())
    return chunks


def chunk_text(
    tok: Tokenizer,
    text: str,
    rules: TextRules,
    frames_after_eos: int | None = None,
    max_tokens: int = MAX_CHUNK_TOKENS,
) -> list[Chunk]:
    """A request -> its chunks, normalised and tokenised, with the frames to run after EOS
    (the caller's value, else the config's, else the word-count guess + 2)."""
    chunks = []
    for piece in split_sentences(tok, text, rules, max_tokens):
        spoken, guess = normalize(piece, rules)
        after = frames_after_eos if frames_after_eos is not None else rules.frames_after_eos
        chunks.append(Chunk(spoken, tok.encode(spoken), guess + 2 if after is None else after))
    return chunks
