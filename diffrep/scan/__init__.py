"""Memorization scans: generate from checkpoints (or take generated images), search each
generation's training matches, compare against the training set's own baseline."""
