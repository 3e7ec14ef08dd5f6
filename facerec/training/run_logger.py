"""MLflow logging of a training run: params, tags, per-epoch metrics, curves and the model directory.

Only rank 0 logs; a disabled logger (other ranks) accepts every call and does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class RunLogger:
    """One MLflow run of the trainer; ``run_id`` is set inside ``run()``."""

    def __init__(self, experiment: str, run_name: str, enabled: bool = True) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.enabled = enabled
        self.run_id: str | None = None

    @contextlib.contextmanager
    def run(
        self,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        nested: bool = False,
        history: list[dict[str, Any]] = (),
    ) -> Iterator[RunLogger]:
        """Open the run; ``history`` (a resumed run's earlier epochs) is logged first."""
        if not self.enabled:
            yield self
            return
        from facerec.tracking.runs import mlflow_run

        with mlflow_run(self.experiment, self.run_name, params=dict(params), tags=dict(tags), nested=nested) as run:
            self.run_id = run.info.run_id
            for row in history:
                self.log_row(row)
            yield self

    def log_row(self, row: Mapping[str, Any]) -> None:
        """One epoch's figures at step ``row["epoch"]``."""
        if not self.run_id:
            return
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def log_final(
        self, model_dir: Path, summary: Mapping[str, Any], fingerprint: str, history: list[dict[str, Any]]
    ) -> None:
        """Summary metrics, the fingerprint tag, loss and validation curves, history and the model directory."""
        if not self.run_id:
            return
        import mlflow

        from facerec.evaluation.plots import history_figure
        from facerec.tracking.runs import log_figure

        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        mlflow.set_tag("facerec.fingerprint", fingerprint)
        for name, keys in (("train_loss", ("train_loss",)), ("validation", ("val_accuracy", "val_auc"))):
            curves = [{k: row[k] for k in ("epoch", *keys) if k in row} for row in history]
            log_figure(history_figure(curves, title=f"{self.run_name}: {name.replace('_', ' ')}"), f"plots/{name}.png")
        mlflow.log_dict({"history": history}, "history.json")
        mlflow.log_artifacts(str(model_dir), artifact_path=model_dir.name)
