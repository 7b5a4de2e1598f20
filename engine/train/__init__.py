"""Training recipe for the default voice model (docs/training.md): data from teacher voices, codec, LM, export.

Needs the `train` extra (teacher TTS in ONNX, whisper and a speaker encoder for
evaluation); serving never imports this package.
"""
