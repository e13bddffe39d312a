"""Memorization detectors compared on captions with known labels (diffrep.detect.bench)."""
