"""Evaluation plots (matplotlib, Agg backend): ROC, CMC, confusion matrix, embedding scatter, training curves.

Every function returns a ``matplotlib.figure.Figure``; callers log it with
``facerec.tracking.log_figure`` (which closes it) or save it themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PROJECTION_NAMES = {"tsne": "t-SNE", "pca": "PCA"}
#: Left end of the ROC plots' log-scaled FAR axis.
MIN_FAR = 1e-3


def chance_line(min_far: float = 1e-3, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) of a random scorer, TAR = FAR, sampled densely on a log grid.

    Two end points joined by a straight segment would be a straight line in *display*
    space, i.e. a wrong curve on the log-scaled FAR axis (TAR 0.25 at FAR 1e-3).
    """
    far = np.logspace(np.log10(min_far), 0.0, points)
    return far, far.copy()


def roc_figure(curves: Mapping[str, tuple[Any, Any]], title: str = "ROC") -> Figure:
    """ROC curves of one or many models: ``{label: (fpr, tpr)}``, log-scaled FAR axis."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, (fpr, tpr) in curves.items():
        fpr = np.asarray(fpr, dtype=np.float64)
        keep = fpr > 0  # log axis: the (0, 0) corner is off the plot
        ax.plot(fpr[keep], np.asarray(tpr)[keep], label=label, linewidth=1.5)
    far, tar = chance_line()
    ax.plot(far, tar, color="grey", linestyle=":", linewidth=1, label="chance (TAR = FAR)")
    ax.set_xscale("log")
    ax.set_xlim(MIN_FAR, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def metric_bars(
    values: Mapping[str, float],
    title: str,
    xlabel: str,
    errors: Mapping[str, float] | None = None,
    lower_is_better: bool = False,
) -> Figure:
    """One horizontal bar per model (``{label: value}``, NaN = not measured), best on top, values printed."""
    finite = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
    order = sorted(finite, key=lambda k: finite[k], reverse=not lower_is_better)
    order += [k for k in values if k not in finite]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(order) + 1.4))
    heights = [finite.get(k, 0.0) for k in order]
    xerr = [(errors or {}).get(k, 0.0) for k in order] if errors else None
    bars = ax.barh(range(len(order)), heights, xerr=xerr, color="tab:blue", alpha=0.8, capsize=3)
    for bar, key, err in zip(bars, order, xerr or [0.0] * len(order)):
        text = f"{finite[key]:.4g}" if key in finite else "not measured"
        text += f" ± {err:.2g}" if err else ""
        ax.annotate(
            text,
            (bar.get_width() + err, bar.get_y() + bar.get_height() / 2),  # right of the error bar
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
        )
    ax.set_yticks(range(len(order)), order, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.margins(x=0.18)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def cmc_figure(curves: Mapping[str, Sequence[float]], title: str = "CMC") -> Figure:
    """Cumulative match characteristic of one or many models: ``{label: cmc}``, rank from 1."""
    fig, ax = plt.subplots(figsize=(6, 5))
    max_rank = 1
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=np.float64)
        ranks = np.arange(1, cmc.size + 1)
        max_rank = max(max_rank, cmc.size)
        ax.plot(ranks, cmc, marker="o", markersize=3, label=label, linewidth=1.5)
    ax.set_xlim(1, max_rank)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], title: str = "Confusion matrix") -> Figure:
    """The 2x2 verification confusion matrix ``[[tn, fp], [fn, tp]]`` (sklearn's display)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    display = ConfusionMatrixDisplay(np.asarray(confusion, dtype=int), display_labels=["different", "same"])
    display.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def confusion_grid(confusions: Mapping[str, Sequence[Sequence[int]]], title: str = "Confusion matrices") -> Figure:
    """One verification confusion matrix per model, side by side."""
    from sklearn.metrics import ConfusionMatrixDisplay

    n = max(1, len(confusions))
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[len(confusions) :]:
        ax.axis("off")
    for ax, (label, confusion) in zip(axes.ravel(), confusions.items()):
        display = ConfusionMatrixDisplay(np.asarray(confusion, dtype=int), display_labels=["diff", "same"])
        display.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
        ax.set_title(label, fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def project_2d(vectors: np.ndarray, method: Literal["tsne", "pca"] = "tsne", seed: int = 0) -> np.ndarray:
    """2-D projection of embeddings with sklearn's t-SNE (fixed seed) or PCA."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) < 3:
        raise ValueError("a 2-D projection needs at least 3 vectors")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(vectors)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(vectors) - 1) / 3)))
        # Exact gradients: faster than Barnes-Hut for the few hundred points of these plots.
        method = "exact" if len(vectors) <= 1000 else "barnes_hut"
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, method=method).fit_transform(
            vectors
        )
    raise ValueError(f"unknown projection {method!r}; choose tsne or pca")


def embedding_figure(
    vectors: np.ndarray,
    labels: Sequence[str],
    method: Literal["tsne", "pca"] = "tsne",
    title: str | None = None,
    seed: int = 0,
    ax: Any = None,
) -> Figure:
    """Scatter of a few identities' embeddings projected to 2-D, one colour per identity."""
    points = project_2d(vectors, method, seed)
    labels = np.asarray(labels)
    own = ax is None
    fig, ax = plt.subplots(figsize=(6, 5)) if own else (ax.figure, ax)
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(sorted(set(labels.tolist()))):
        mask = labels == name
        ax.scatter(points[mask, 0], points[mask, 1], s=18, color=cmap(i % 20), label=name.replace("_", " "))
    ax.set_title(title or f"{PROJECTION_NAMES[method]} of embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    if own:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="x-small", frameon=False)
        fig.tight_layout()
    return fig


def embedding_grid(
    panels: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    method: Literal["tsne", "pca"] = "tsne",
    seed: int = 0,
) -> Figure:
    """One 2-D embedding scatter per model (the same identities in each), one shared legend."""
    n = max(1, len(panels))
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, (label, (vectors, names)) in zip(axes.ravel(), panels.items()):
        embedding_figure(vectors, names, method, title=label, seed=seed, ax=ax)
    handles, names = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(5, max(1, len(names))), fontsize="x-small", frameon=False)
    fig.suptitle(f"{PROJECTION_NAMES[method]} of embeddings ({len(names)} identities)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def history_figure(history: Sequence[Mapping[str, Any]], title: str = "Training") -> Figure:
    """Training curves: every numeric key of per-epoch ``history`` records against the epoch."""
    keys = sorted({k for row in history for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))})
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        xs = [row.get("epoch", i + 1) for i, row in enumerate(history) if key in row]
        ax.plot(xs, [row[key] for row in history if key in row], marker="o", markersize=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if keys:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def curves_by_model(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], key: str, ylabel: str, title: str = "Training"
) -> Figure:
    """One line per model of ``key`` in its per-epoch history (``{label: [{"epoch": 0, key: ...}, ...]}``)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, history in histories.items():
        rows = [row for row in history if key in row]
        ax.plot([row["epoch"] for row in rows], [row[key] for row in rows], marker="o", markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: before training)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
