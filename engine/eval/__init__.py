"""Evaluation of voice models: `python -m engine.eval` (see __main__.py)."""
