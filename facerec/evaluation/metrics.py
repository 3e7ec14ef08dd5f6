"""Verification and identification metrics: pure functions over scores and labels.

Scores are similarities (higher = more likely the same person); labels are
booleans (True = same person). ROC, AUC, precision/recall and confusion
matrices come from ``sklearn.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

FARS = (1e-2, 1e-3)


def _far_key(far: float) -> str:
    return f"{far:.0e}".replace("e-0", "e-")


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    if not y.any() or y.all():
        raise ValueError("verification metrics need both matched and mismatched pairs")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return s, y


# ------------------------------------------------------------------ verification
def roc_curve_points(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), predicting "same" when ``score >= threshold``."""
    s, y = _check(scores, labels)
    return skm.roc_curve(y, s, drop_intermediate=False)


def roc_auc(scores: Any, labels: Any) -> float:
    s, y = _check(scores, labels)
    return float(skm.roc_auc_score(y, s))


def best_threshold(scores: Any, labels: Any) -> float:
    """The threshold maximising accuracy on these pairs (ties: the midpoint of the best range)."""
    s, y = _check(scores, labels)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    n_pos, n_neg = y.sum(), (~y).sum()
    acc = (tpr * n_pos + (1 - fpr) * n_neg) / y.size
    best = int(np.argmax(acc))
    upper = thr[best]
    if not np.isfinite(upper):  # sklearn's first threshold is +inf (nothing accepted)
        return float(s.max() + 1e-6)
    # Midpoint between the accepted score and the next lower score: robust for unseen pairs.
    lower_scores = s[s < upper]
    return float((upper + lower_scores.max()) / 2) if lower_scores.size else float(upper - 1e-6)


def accuracy_at(scores: Any, labels: Any, threshold: float) -> float:
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    return float(np.mean((s >= threshold) == y))


def make_folds(n: int, n_folds: int = 10, seed: int = 0) -> np.ndarray:
    """Fold ids 0..n_folds-1 for ``n`` pairs, shuffled with a fixed seed."""
    folds = np.arange(n) % n_folds
    np.random.default_rng(seed).shuffle(folds)
    return folds


def kfold_accuracy(
    scores: Any, labels: Any, folds: Any = None, n_folds: int = 10
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """LFW-style accuracy: each fold is scored with the threshold chosen on the other folds.

    Returns (mean, std, per-fold thresholds, out-of-fold predictions).
    """
    s, y = _check(scores, labels)
    folds = make_folds(s.size, n_folds) if folds is None else np.asarray(folds)
    predictions = np.zeros_like(y)
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        train = ~test
        if not train.any():  # a single fold: threshold chosen on itself
            train = test
        threshold = best_threshold(s[train], y[train])
        predictions[test] = s[test] >= threshold
        accuracies.append(np.mean(predictions[test] == y[test]))
        thresholds.append(threshold)
    return float(np.mean(accuracies)), float(np.std(accuracies)), np.asarray(thresholds), predictions


def equal_error_rate(scores: Any, labels: Any) -> tuple[float, float]:
    """(EER, threshold): where the false accept and false reject rates meet (interpolated)."""
    fpr, tpr, thr = roc_curve_points(scores, labels)
    fnr = 1 - tpr
    diff = fpr - fnr  # increasing from -1 to +1 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        t = thr[i] if np.isfinite(thr[i]) else thr[min(i + 1, len(thr) - 1)]
        return float(fpr[i]), float(t)
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    t0 = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(eer), float(t0 + w * (thr[i] - t0))


def tar_at_far(scores: Any, labels: Any, far: float) -> float:
    """True accept rate at the largest threshold-free operating point with FAR <= ``far``."""
    fpr, tpr, _ = roc_curve_points(scores, labels)
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_report(labels: Any, predictions: Any) -> dict[str, Any]:
    """Precision, recall, F1 of "same" and the confusion matrix [[tn, fp], [fn, tp]]."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predictions).astype(bool)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y, p, average="binary", pos_label=True, zero_division=0
    )
    confusion = skm.confusion_matrix(y, p, labels=[False, True])
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "confusion": confusion.astype(int).tolist(),
    }


def verification_metrics(scores: Any, labels: Any, folds: Any = None, n_folds: int = 10) -> dict[str, Any]:
    """Every verification figure at once.

    Accuracy is k-fold (threshold picked on the other folds); precision, recall,
    F1 and the confusion matrix pool the out-of-fold decisions; ``threshold`` is
    the median of the per-fold thresholds.
    """
    s, y = _check(scores, labels)
    mean, std, thresholds, predictions = kfold_accuracy(s, y, folds, n_folds)
    eer, eer_threshold = equal_error_rate(s, y)
    out: dict[str, Any] = {
        "accuracy": mean,
        "accuracy_std": std,
        "auc": roc_auc(s, y),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "threshold": float(np.median(thresholds)),
        "n_pairs": int(s.size),
    }
    for far in FARS:
        out[f"tar_far_{_far_key(far)}"] = tar_at_far(s, y, far)
    out.update(threshold_report(y, predictions))
    return out


# ---------------------------------------------------------------- identification
def first_hit_rank(probe_labels: Sequence[Any], ranked_labels: Any) -> np.ndarray:
    """1-based rank of each probe's true identity among its ranked candidates (0 = not found)."""
    probes = np.asarray(probe_labels).reshape(-1, 1)
    hits = np.asarray(ranked_labels) == probes
    found = hits.any(axis=1)
    return np.where(found, hits.argmax(axis=1) + 1, 0)


def cmc_curve(probe_labels: Sequence[Any], ranked_labels: Any) -> np.ndarray:
    """``cmc[k-1]`` = fraction of probes whose identity is among the first ``k`` candidates."""
    ranks = first_hit_rank(probe_labels, ranked_labels)
    k_max = np.asarray(ranked_labels).shape[1]
    return np.array([np.mean((ranks > 0) & (ranks <= k)) for k in range(1, k_max + 1)])


def open_set_rates(known_scores: Any, known_correct: Any, unknown_scores: Any, far: float) -> dict[str, float]:
    """Detection and identification rate (DIR) at a false alarm rate on distractors.

    The threshold is the lowest one at which at most ``far`` of the distractors'
    best scores are accepted; DIR is the fraction of known probes that are both
    rank-1 correct and accepted.
    """
    unknown = np.sort(np.asarray(unknown_scores, dtype=np.float64))[::-1]
    known = np.asarray(known_scores, dtype=np.float64)
    correct = np.asarray(known_correct).astype(bool)
    if unknown.size == 0 or known.size == 0:
        raise ValueError("open-set rates need known probes and distractors")
    allowed = int(np.floor(far * unknown.size))
    threshold = float(np.nextafter(unknown[allowed], np.inf)) if allowed < unknown.size else float(unknown[-1])
    return {
        "dir": float(np.mean(correct & (known >= threshold))),
        "threshold": threshold,
        "far": float(np.mean(unknown >= threshold)),
    }


def identification_metrics(
    probe_labels: Sequence[Any],
    ranked_labels: Any,
    ranked_scores: Any,
    distractor_scores: Any = None,
    far: float = 1e-2,
) -> dict[str, Any]:
    """Closed-set rank-1/5 and CMC, macro P/R/F1 of the rank-1 decision, and open-set DIR@FAR."""
    probes = np.asarray(probe_labels)
    ranked = np.asarray(ranked_labels)
    scores = np.asarray(ranked_scores, dtype=np.float64)
    if probes.size == 0:
        raise ValueError("identification metrics need at least one probe")
    cmc = cmc_curve(probes, ranked)
    top1 = ranked[:, 0]
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        probes, top1, labels=np.unique(probes), average="macro", zero_division=0
    )
    out: dict[str, Any] = {
        "rank1": float(cmc[0]),
        "rank5": float(cmc[min(4, cmc.size - 1)]),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "n_probes": int(probes.size),
        "cmc": cmc.tolist(),
    }
    if distractor_scores is not None and np.asarray(distractor_scores).size:
        rates = open_set_rates(scores[:, 0], top1 == probes, distractor_scores, far)
        key = _far_key(far)
        out[f"dir_far_{key}"] = rates["dir"]
        out[f"open_set_threshold_far_{key}"] = rates["threshold"]
        out["n_distractors"] = int(np.asarray(distractor_scores).size)
    return out
