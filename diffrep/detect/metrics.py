"""ROC curve, ROC AUC and TPR at a fixed false-positive rate for scores where higher means
"more likely memorized" (label 1)."""

from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1); ties share a point."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    if y.all() or not y.any():
        raise ValueError("ROC needs both positive and negative labels")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return np.r_[0.0, fp / (~y).sum()], np.r_[0.0, tp / y.sum()]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids: ties count one half)."""
    fpr, tpr = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr_max: float = 0.01) -> float:
    """Largest TPR among thresholds whose FPR is <= fpr_max (no interpolation)."""
    fpr, tpr = roc_curve(scores, labels)
    return float(tpr[fpr <= fpr_max + 1e-12].max())
