"""MLflow model registry for facerec models, as MLflow documents it.

A facerec model is logged as a pyfunc model (``facerec.tracking.pyfunc``) whose artifact
is the model directory; ``mlflow.register_model`` makes it a version of a registered
model and ``MlflowClient.set_registered_model_alias`` moves the alias (``champion``)
when the new version is at least as good. ``models:/NAME@ALIAS`` then works with
``mlflow.pyfunc.load_model``, ``mlflow models serve`` and facerec's ``--model``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
DESCRIPTION = (
    "facerec face embedders: pyfunc models whose predict() takes face crops (a 'path' or 'image' bytes "
    "column) and returns L2-normalised float32 embeddings; the facerec model directory is the artifact."
)


def ensure_logged_model(run_id: str, model_dir: str | Path) -> str:
    """``models:/<id>`` of the facerec model logged to ``run_id``; logs ``model_dir`` there first if none is."""
    import mlflow

    from facerec.tracking.pyfunc import log_model_dir, logged_model_uri

    uri = logged_model_uri(run_id)
    if uri is None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            uri = log_model_dir(model_dir).model_uri
        else:
            with mlflow.start_run(run_id=run_id, nested=active is not None):
                uri = log_model_dir(model_dir).model_uri
    return uri


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
    """Register the facerec model of run ``run_id`` (logging ``model_dir`` as one if needed); maybe move ``alias``.

    The alias moves when the registered model has no version under it yet, or the
    current one was measured on another protocol, or the new ``value`` of ``metric``
    is at least as good. Returns ``{name, version, alias_moved, uri, ...}``.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    model_uri = ensure_logged_model(run_id, model_dir)
    version_tags = {
        "facerec.metric": metric,
        "facerec.value": f"{value:.6f}",
        "facerec.protocol": protocol,
        **{f"facerec.{k}": str(v) for k, v in tags.items()},
    }
    version = mlflow.register_model(model_uri, name, tags=version_tags)
    client.update_model_version(name, version.version, f"{tags.get('label', '')}: {metric}={value:.4f} on {protocol}")
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, DESCRIPTION)
    moved = _should_move(client, name, alias, metric, value, protocol, version.version)
    if moved:
        client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s%s", name, version.version, f" as @{alias}" if moved else f" (@{alias} kept)")
    return {
        "name": name,
        "version": version.version,
        "alias": alias,
        "alias_moved": moved,
        "uri": f"models:/{name}@{alias}" if moved else f"models:/{name}/{version.version}",
        "model_uri": model_uri,
        "metric": metric,
        "value": value,
        "protocol": protocol,
        "run_id": run_id,
        **tags,
    }


def _should_move(
    client: Any, name: str, alias: str, metric: str, value: float, protocol: str, new_version: str
) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return True
    if str(current.version) == str(new_version):
        return True
    same_basis = current.tags.get("facerec.protocol") == protocol and current.tags.get("facerec.metric") == metric
    if not same_basis:
        return True
    lower_better = metric in ("eer",)
    old = float(current.tags.get("facerec.value", "nan"))
    return old != old or (value <= old if lower_better else value >= old)
