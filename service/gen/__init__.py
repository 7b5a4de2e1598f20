"""Code generated from protos/ by `python -m service.protogen`. Do not edit."""
