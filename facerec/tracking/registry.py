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

    A model is registered once: registering a model directory whose fingerprint a version
    already holds (measured on the same protocol and metric; e.g. a benchmark re-run that
    reused every model) returns that version (``registered`` False). The alias moves
    when the registered model has no version under it yet, or the current one was measured
    on another protocol, or the new ``value`` of ``metric`` is at least as good. Returns
    ``{name, version, registered, alias_moved, at_alias, uri, ...}``.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    version_tags = {
        "facerec.metric": metric,
        "facerec.value": f"{value:.6f}",
        "facerec.protocol": protocol,
        **{f"facerec.{k}": str(v) for k, v in tags.items()},
    }
    fingerprint = _fingerprint(model_dir)
    if fingerprint:
        version_tags["facerec.fingerprint"] = fingerprint
    version = _registered_version(client, name, fingerprint, protocol, metric)
    registered = version is None  # a benchmark re-run that reused its champion registers (and logs) nothing new
    if registered:
        model_uri = ensure_logged_model(run_id, model_dir)
        version = mlflow.register_model(model_uri, name, tags=version_tags)
        client.update_model_version(
            name, version.version, f"{tags.get('label', '')}: {metric}={value:.4f} on {protocol}"
        )
    else:
        model_uri = version.source
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, DESCRIPTION)
    current = _alias_holder(client, name, alias)
    holds = current is not None and str(current.version) == str(version.version)  # already the champion
    moved = not holds and _should_move(current, metric, value, protocol)
    if moved:
        client.set_registered_model_alias(name, alias, version.version)
    log.info(
        "%s %s version %s%s",
        "registered" if registered else "already registered:",
        name,
        version.version,
        f" as @{alias}" if moved or holds else f" (@{alias} kept)",
    )
    return {
        "name": name,
        "version": version.version,
        "registered": registered,
        "alias": alias,
        "alias_moved": moved,
        "at_alias": moved or holds,
        "uri": f"models:/{name}@{alias}" if moved or holds else f"models:/{name}/{version.version}",
        "model_uri": model_uri,
        "metric": metric,
        "value": value,
        "protocol": protocol,
        "run_id": run_id,
        **tags,
    }


def _fingerprint(model_dir: str | Path) -> str | None:
    """The model directory's recorded fingerprint (``model.json``), None if it has none."""
    from facerec.models.base import read_meta

    try:
        return read_meta(model_dir).get("fingerprint")
    except (OSError, ValueError):
        return None


def _registered_version(client: Any, name: str, fingerprint: str | None, protocol: str, metric: str) -> Any | None:
    """The newest version of ``name`` holding this very model (same fingerprint), measured the same way."""
    from mlflow.exceptions import MlflowException

    if not fingerprint:
        return None
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:  # no such registered model yet
        return None
    same = [
        v
        for v in versions
        if v.tags.get("facerec.fingerprint") == fingerprint
        and v.tags.get("facerec.protocol") == protocol
        and v.tags.get("facerec.metric") == metric
    ]
    return max(same, key=lambda v: int(v.version), default=None)


def _alias_holder(client: Any, name: str, alias: str) -> Any | None:
    """The version under ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _should_move(current: Any | None, metric: str, value: float, protocol: str) -> bool:
    """Whether a version scoring ``value`` takes the alias from ``current``."""
    if current is None:
        return True
    same_basis = current.tags.get("facerec.protocol") == protocol and current.tags.get("facerec.metric") == metric
    if not same_basis:
        return True
    lower_better = metric in ("eer",)
    old = float(current.tags.get("facerec.value", "nan"))
    return old != old or (value <= old if lower_better else value >= old)
