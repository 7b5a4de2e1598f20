"""Model families the engine serves, and the checkpoint that ships inside the package."""

from __future__ import annotations

from pathlib import Path

from engine.models.speech_lm.model import WEIGHTS_FILE
from engine.models.speech_lm.toy import toy_model_dir

# The trained default model (its MODEL_CARD.md says how well it speaks).
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "default"


def default_model_dir() -> Path:
    """The shipped trained model, or the random-weight toy model if the weights are missing
    (an install without them): the toy keeps the service runnable but does not speak."""
    if (SHIPPED_MODEL_DIR / WEIGHTS_FILE).exists():
        return SHIPPED_MODEL_DIR
    return toy_model_dir()


def load_family(model_dir: str | Path, config, device, dtype, packed=None):
    """The model family of the checkpoint in `model_dir`, loaded for the engine: a pocket-tts
    folder (its config.yaml), else the speech LM (config.json + model.safetensors)."""
    from engine.models import pocket_tts

    if pocket_tts.detect(model_dir):
        from engine.models.pocket_tts.family import PocketTTSFamily

        return PocketTTSFamily(model_dir, config, device, dtype, packed)
    from engine.models.speech_lm.family import SpeechLMFamily

    return SpeechLMFamily(model_dir, config, device, dtype, packed)
