"""MLflow model registry for facerec model directories (``model.json`` + ``weights.pt`` + ``config.yaml``).

A model directory is not an MLflow flavour, so ``mlflow.register_model("runs:/...")``
refuses it (MLflow 3 looks for an ``MLmodel`` file or a logged model). The directory
is logged as run artifacts and a model version is created with
``MlflowClient.create_model_version`` whose source is that artifact folder; then
``models:/NAME@ALIAS`` downloads to a folder holding ``model.json``, which
``facerec.models.load_model`` loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"


def register_model_dir(
    model_dir: str | Path,
    run_id: str,
    name: str = "facerec",
    alias: str = "champion",
    *,
    metric: str,
    value: float,
    protocol: str,
    **tags: Any,
) -> dict[str, Any]:
    """Log ``model_dir`` to run ``run_id``, register it as a new version of ``name`` and maybe move ``alias``.

    The alias moves when the registered model has no version under it yet, or the
    current one was measured on another protocol, or the new ``value`` of ``metric``
    is at least as good. Returns ``{name, version, alias_moved, uri, ...}``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, MODEL_ARTIFACT)}
    if "model.json" not in logged:  # the trainer logs its model directory already
        client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}"
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="facerec face embedders (model directories)")
    version_tags = {
        "facerec.metric": metric,
        "facerec.value": f"{value:.6f}",
        "facerec.protocol": protocol,
        **{f"facerec.{k}": str(v) for k, v in tags.items()},
    }
    version = client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags=version_tags,
        description=f"{tags.get('label', '')}: {metric}={value:.4f} on {protocol}",
    )
    moved = _should_move(client, name, alias, metric, value, protocol)
    if moved:
        client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s%s", name, version.version, f" as @{alias}" if moved else f" (@{alias} kept)")
    return {
        "name": name,
        "version": version.version,
        "alias": alias,
        "alias_moved": moved,
        "uri": f"models:/{name}@{alias}" if moved else f"models:/{name}/{version.version}",
        "metric": metric,
        "value": value,
        "protocol": protocol,
        "run_id": run_id,
        **tags,
    }


def _should_move(client: Any, name: str, alias: str, metric: str, value: float, protocol: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return True
    same_basis = current.tags.get("facerec.protocol") == protocol and current.tags.get("facerec.metric") == metric
    if not same_basis:
        return True
    lower_better = metric in ("eer",)
    old = float(current.tags.get("facerec.value", "nan"))
    return old != old or (value <= old if lower_better else value >= old)
