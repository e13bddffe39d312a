"""Thin Ray job entrypoints: `python -m jobs.<name> --config FILE [--key value ...]`."""
