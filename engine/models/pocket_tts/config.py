"""What a pocket-tts checkpoint folder says about itself: its `config.yaml`.

The folder holds `config.yaml` (the format of the configs Kyutai ships with the pocket-tts package),
`model.safetensors` (the whole model's state dict) and a tokenizer (`tokenizer.json` or a SentencePiece
`.model`). The shipped configs point at the hub (`hf://...`); this engine never downloads, so a
checkpoint must name local files, relative to the folder or absolute.

Parsing is strict: a key this module does not know is an error, so a config asking for a feature
the engine does not implement is refused instead of served wrongly.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
FLOW_TYPES = ("lsd", "pointwise", "drifting")


@dataclass(frozen=True)
class BackboneConfig:
    """The FlowLM transformer (yaml `flow_lm.transformer`)."""

    d_model: int
    num_heads: int
    num_layers: int
    hidden_scale: int
    max_period: float
    attn_dim: int | None = None  # width of queries and attention output; d_model when None
    num_kv_heads: int | None = None  # grouped-query attention; num_heads when None
    dim_feedforward: int | None = None  # overrides d_model * hidden_scale

    @property
    def attn_width(self) -> int:
        return self.attn_dim or self.d_model

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.attn_width // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.dim_feedforward or self.d_model * self.hidden_scale


@dataclass(frozen=True)
class TextTableConfig:
    """The text lookup table and its tokenizer (yaml `flow_lm.lookup_table`)."""

    dim: int
    n_bins: int
    tokenizer: str  # "tokenizers" (a HF tokenizer.json) or "sentencepiece"
    tokenizer_path: Path
    rank: int | None = None  # low-rank table: rank-wide rows, then a bias-free projection to dim

    @property
    def is_json(self) -> bool:
        return self.tokenizer in ("tokenizers", "json") or self.tokenizer_path.suffix == ".json"


@dataclass(frozen=True)
class FlowHeadConfig:
    """The per-frame sampler head (yaml `flow_lm.flow`)."""

    dim: int
    depth: int
    type: str = "lsd"

    @property
    def time_conditions(self) -> int:
        return 2 if self.type == "lsd" else 0


@dataclass(frozen=True)
class FlowLMConfig:
    transformer: BackboneConfig
    flow: FlowHeadConfig
    lookup_table: TextTableConfig
    dtype: str = "float32"
    z_dim: int | None = None  # bias-free projection of the output before the EOS and flow heads
    insert_bos_before_voice: bool = False
    weights_path: None = None  # separate per-part weights are not supported

    @property
    def cond_dim(self) -> int:
        return self.z_dim or self.transformer.d_model


@dataclass(frozen=True)
class SeanetConfig:
    dimension: int
    channels: int
    n_filters: int
    n_residual_layers: int
    ratios: tuple[int, ...]
    kernel_size: int
    residual_kernel_size: int
    last_kernel_size: int
    dilation_base: int
    pad_mode: str
    compress: int

    @property
    def hop(self) -> int:
        return math.prod(self.ratios)


@dataclass(frozen=True)
class MimiTransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    layer_scale: float
    context: int  # a query sees itself and the context - 1 positions before it
    dim_feedforward: int
    input_dimension: int
    output_dimensions: tuple[int, ...]
    max_period: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


@dataclass(frozen=True)
class QuantizerConfig:
    dimension: int  # the latent width (32)
    output_dimension: int


@dataclass(frozen=True)
class MimiConfig:
    sample_rate: int
    channels: int
    frame_rate: float
    seanet: SeanetConfig
    transformer: MimiTransformerConfig
    quantizer: QuantizerConfig
    dtype: str = "float32"
    inner_dim: int | None = None  # the encoder's output width; the LM's latents are quantizer.dimension
    outer_dim: int | None = None
    decoder_seanet: SeanetConfig | None = None  # the decoder side, when it differs from the encoder's
    decoder_transformer: MimiTransformerConfig | None = None
    weights_path: None = None

    @property
    def dec_seanet(self) -> SeanetConfig:
        return self.decoder_seanet or self.seanet

    @property
    def dec_transformer(self) -> MimiTransformerConfig:
        return self.decoder_transformer or self.transformer

    @property
    def voice_dim(self) -> int:
        """Width of the encoder's latents, which voice conditioning reads (32, or 512 in english_2026-01)."""
        return self.inner_dim or self.seanet.dimension

    @property
    def frame_size(self) -> int:
        """Audio samples per latent frame (1920 at 24 kHz and 12.5 Hz)."""
        return int(self.sample_rate / self.frame_rate)

    @property
    def steps_per_frame(self) -> int:
        """Transformer positions (at sample_rate / hop, 200 Hz) per latent frame: the resampling stride."""
        return self.frame_size // self.seanet.hop


@dataclass(frozen=True)
class PocketConfig:
    """A whole checkpoint: the two models, the text rules and the generation defaults."""

    flow_lm: FlowLMConfig
    mimi: MimiConfig
    weights_path: Path
    replace_characters: dict[str, str] = field(default_factory=dict)
    pad_with_spaces_for_short_inputs: bool = False
    remove_semicolons: bool = False
    append_terminal_punctuation: bool = True
    capitalize_first_letter: bool = True
    model_recommended_frames_after_eos: int | None = None
    default_temperature: float = 0.3
    default_eos_threshold: float = -4.0
    weights_path_without_voice_cloning: str | None = None  # ignored: the engine needs speaker_proj

    @property
    def latent_dim(self) -> int:
        return self.mimi.quantizer.dimension


def _build(cls: type, raw: Any, where: str) -> Any:
    """A dataclass from a yaml mapping: unknown keys and missing required ones are errors."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    missing = [n for n, f in known.items() if n not in raw and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    return cls(**raw)


def _local_path(value: str | None, folder: Path, key: str, default: str | None = None) -> Path:
    if value is None:
        if default is None:
            raise ValueError(f"{key} is not set in {CONFIG_FILE}")
        value = default
    if "://" in str(value):
        # The package's own configs name hub files (hf://org/repo/path/file@revision). This engine
        # never downloads: the file, downloaded by the user, is looked for beside config.yaml.
        local = folder / str(value).split("@")[0].rsplit("/", 1)[-1]
        if local.exists():
            return local
        raise ValueError(
            f"{key} is {value!r}, a remote address, and {local.name} is not in {folder}: this engine does not "
            f"download. Download the file into the folder, or set {key} in {folder / CONFIG_FILE} to its local "
            "path (absolute, or relative to the folder)."
        )
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def _checked(cfg: PocketConfig) -> PocketConfig:
    flow, mimi = cfg.flow_lm, cfg.mimi
    if flow.weights_path is not None or mimi.weights_path is not None:
        raise ValueError("flow_lm.weights_path / mimi.weights_path are not supported: use one weights_path")
    if flow.flow.type not in FLOW_TYPES:
        raise ValueError(f"flow_lm.flow.type {flow.flow.type!r} is not supported (one of {FLOW_TYPES})")
    if flow.lookup_table.dim != flow.transformer.d_model:
        raise ValueError("flow_lm.lookup_table.dim must equal flow_lm.transformer.d_model")
    t = flow.transformer
    if t.attn_width % t.num_heads or t.num_heads % t.kv_heads or t.head_dim % 2:
        raise ValueError("flow_lm.transformer: attn_dim / num_heads / num_kv_heads do not divide")
    if mimi.channels != 1:
        raise ValueError("mimi: only mono models are supported")
    if (mimi.outer_dim or mimi.dec_seanet.dimension) != mimi.quantizer.output_dimension:
        raise ValueError("mimi: outer_dim must equal quantizer.output_dimension")
    for name, tr in (("transformer", mimi.transformer), ("decoder_transformer", mimi.dec_transformer)):
        if tr.input_dimension != tr.d_model or tuple(tr.output_dimensions) != (tr.d_model,):
            raise ValueError(f"mimi.{name}: input/output projections are not supported")
    if mimi.dec_seanet.hop != mimi.seanet.hop or mimi.frame_size % mimi.seanet.hop:
        raise ValueError("mimi: the encoder and decoder hops must match and divide the frame size")
    return cfg


def load_config(model_dir: str | Path) -> PocketConfig:
    """Parse `model_dir/config.yaml`; relative weight and tokenizer paths resolve against `model_dir`."""
    import yaml  # a runtime dependency of this model family only

    folder = Path(model_dir).resolve()
    raw = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or "flow_lm" not in raw or "mimi" not in raw:
        raise ValueError(f"{folder / CONFIG_FILE}: not a pocket-tts config (no flow_lm and mimi sections)")
    raw = dict(raw)
    f = dict(raw.pop("flow_lm"))
    lut = dict(f.pop("lookup_table"))
    lut["tokenizer_path"] = _local_path(lut.get("tokenizer_path"), folder, "flow_lm.lookup_table.tokenizer_path")
    flow_lm = _build(
        FlowLMConfig,
        {
            **f,
            "transformer": _build(BackboneConfig, f.get("transformer"), "flow_lm.transformer"),
            "flow": _build(FlowHeadConfig, f.get("flow"), "flow_lm.flow"),
            "lookup_table": _build(TextTableConfig, lut, "flow_lm.lookup_table"),
        },
        "flow_lm",
    )
    m = dict(raw.pop("mimi"))
    for key in ("seanet", "decoder_seanet"):
        if m.get(key) is not None:
            m[key] = _build(SeanetConfig, {**m[key], "ratios": tuple(m[key]["ratios"])}, f"mimi.{key}")
    for key in ("transformer", "decoder_transformer"):
        if m.get(key) is not None:
            sec = {**m[key], "output_dimensions": tuple(m[key]["output_dimensions"])}
            m[key] = _build(MimiTransformerConfig, sec, f"mimi.{key}")
    m["quantizer"] = _build(QuantizerConfig, m.get("quantizer"), "mimi.quantizer")
    mimi = _build(MimiConfig, m, "mimi")
    raw["weights_path"] = _local_path(raw.get("weights_path"), folder, "weights_path", default=WEIGHTS_FILE)
    return _checked(_build(PocketConfig, {**raw, "flow_lm": flow_lm, "mimi": mimi}, str(folder / CONFIG_FILE)))


def detect(model_dir: str | Path) -> bool:
    """True if `model_dir` holds a pocket-tts checkpoint (a config.yaml with a flow_lm section)."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        return False
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and isinstance(raw.get("flow_lm"), dict)
