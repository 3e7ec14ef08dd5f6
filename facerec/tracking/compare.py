"""Model comparison in the MLflow UI: a results table (Markdown + HTML) and one chart per headline metric.

A benchmark's parent run holds these under ``results/`` and ``compare/`` (its Artifacts
tab renders both); its child runs log the same metric keys (``HEADLINE_METRICS``), so
the experiment page's Chart view and "Compare" line the models up as well.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: (metric key, chart title, lower is better): the keys every benchmark child run logs.
HEADLINE_METRICS = (
    ("accuracy", "verification accuracy (k-fold threshold)", False),
    ("auc", "ROC AUC", False),
    ("tar_far_1e-2", "TAR at FAR = 1e-2", False),
    ("tar_far_1e-3", "TAR at FAR = 1e-3", False),
    ("rank1", "rank-1 identification rate", False),
    ("train_minutes", "training time (minutes)", True),
    ("images_per_s", "embedding throughput (images/s)", False),
)
CHART_DIR = "compare"
TABLE_DIR = "results"


def headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """The headline metrics of one model, NaN where not measured (the keys stay identical across runs)."""
    return {key: float(metrics.get(key, math.nan)) for key, _, _ in HEADLINE_METRICS}


def comparison_figures(by_model: Mapping[str, Mapping[str, float]], title: str) -> dict[str, Any]:
    """``{"<metric>.png": Figure}``: one bar chart per headline metric across the models."""
    from facerec.evaluation.plots import metric_bars

    figures = {}
    for key, label, lower in HEADLINE_METRICS:
        values = {model: float(m.get(key, math.nan)) for model, m in by_model.items()}
        if all(math.isnan(v) for v in values.values()):
            continue
        errors = None
        if key == "accuracy":
            errors = {model: float(m.get("accuracy_std", 0.0)) for model, m in by_model.items()}
        figures[f"{key}.png"] = metric_bars(values, f"{label}, {title}", label, errors, lower_is_better=lower)
    return figures


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str, note: str = "") -> str:
    """A standalone HTML page with the table (the MLflow artifact viewer renders it)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    style = (
        "body{font-family:sans-serif;font-size:13px;margin:12px}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head>\n<body><h3>{html.escape(title)}</h3>\n"
        f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n"
        f"<p>{html.escape(note)}</p></body></html>\n"
    )


def log_comparison(
    by_model: Mapping[str, Mapping[str, float]], tables: Mapping[str, str], title: str, out_dir: str | Path
) -> list[str]:
    """Log the tables (``{"md": ..., "html": ..., "csv": ...}``) and the charts to the active run.

    They are also written under ``out_dir`` (``results.*`` and ``compare/*.png``). Returns the
    artifact paths logged.
    """
    import mlflow

    from facerec.files import atomic_path, atomic_write
    from facerec.tracking.runs import log_figure

    out_dir = Path(out_dir)
    (out_dir / CHART_DIR).mkdir(parents=True, exist_ok=True)
    logged = []
    for suffix, text in tables.items():
        with atomic_write(out_dir / f"results.{suffix}") as handle:
            handle.write(text)
        mlflow.log_text(text, f"{TABLE_DIR}/results.{suffix}")
        logged.append(f"{TABLE_DIR}/results.{suffix}")
    for name, figure in comparison_figures(by_model, title).items():
        with atomic_path(out_dir / CHART_DIR / name) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
        log_figure(figure, f"{CHART_DIR}/{name}")
        logged.append(f"{CHART_DIR}/{name}")
    return logged
