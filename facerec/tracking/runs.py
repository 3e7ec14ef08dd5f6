"""MLflow set-up shared by every stage: tracking URI default, run naming, tags, plots."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure_tracking() -> str:
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def artifact_location(uri: str) -> str | None:
    """``<folder of the sqlite file>/mlruns`` for a local ``sqlite:///`` store, else None (MLflow's default).

    MLflow would put the artifacts of a new experiment in ``./mlruns`` of whatever folder a
    command runs in; keeping them beside the database keeps a store in one place.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return None
    return (Path(uri[len(prefix) :]).expanduser().resolve().parent / "mlruns").as_uri()


def use_experiment(name: str) -> None:
    """Make ``name`` the active experiment, creating it with its artifacts beside a sqlite store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    location = artifact_location(tracking_uri())
    if location and mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another process
            pass
    mlflow.set_experiment(name)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def mlflow_run(
    experiment: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    nested: bool = False,
) -> Iterator[Any]:
    """Start (or nest) an MLflow run in ``experiment`` with params and standard tags.

    Inside an active run the new run nests (a pipeline chaining stages); under
    ``mlflow run`` (``$MLFLOW_RUN_ID`` set) the first run is the project's run, in the
    experiment chosen there.
    """
    import mlflow

    configure_tracking()
    nested = nested or mlflow.active_run() is not None
    if not nested and not os.environ.get("MLFLOW_RUN_ID"):
        use_experiment(experiment)
    all_tags = {"facerec.git_commit": git_commit() or "unknown", **(tags or {})}
    with mlflow.start_run(run_name=run_name, nested=nested, tags={k: str(v) for k, v in all_tags.items()}) as run:
        if params:
            log_params(params)
        yield run


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    from facerec.config import flatten

    flat = {k: ("none" if v is None else str(v)[:6000]) for k, v in flatten(params).items()}
    mlflow.log_params(flat)


def log_figure(figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG artifact and close it."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def run_name(model: str, recipe: str, data: str) -> str:
    """A run name that says what was run: ``resnet18@64px supcon-full lfw-view1``.

    ``model`` is the model label (name@input size), ``recipe`` how its weights came about
    (loss-strategy of a fine-tune, ``zero-shot:<weights>``, an index kind, ...), ``data`` the
    data and split or protocol.
    """
    return " ".join(part.strip() for part in (model, recipe, data) if part and part.strip())


def set_run_name(name: str) -> None:
    """Rename the active run (the name is known only once the model is loaded)."""
    import mlflow

    mlflow.set_tag("mlflow.runName", name)


def training_run_name(config: Any, model: Any) -> str:
    """``<model>@<size>px <loss>-<strategy> <data>`` for a trainer run (``TrainConfig``, the built embedder)."""
    data = config.data
    if data.kind == "lfw":
        where = "lfw:peopleDevTrain"
    elif data.kind == "sample":
        where = "lfw-sample"
    else:
        where = Path(data.root or ".").name
    return run_name(f"{model.name}@{model.input_size}px", f"{config.loss.kind}-{config.strategy.kind}", where)
