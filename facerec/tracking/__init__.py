"""Tracking: MLflow runs and experiments, and the model registry."""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_TRACKING_URI": "runs",
    "tracking_uri": "runs",
    "configure_tracking": "runs",
    "artifact_location": "runs",
    "use_experiment": "runs",
    "git_commit": "runs",
    "mlflow_run": "runs",
    "log_params": "runs",
    "log_figure": "runs",
    "MODEL_ARTIFACT": "registry",
    "register_model_dir": "registry",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
