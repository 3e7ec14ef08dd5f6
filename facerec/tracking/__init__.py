"""Tracking: MLflow runs and experiments, dataset inputs, the pyfunc model flavor and the model registry."""

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
    "ensure_logged_model": "registry",
    "run_name": "runs",
    "set_run_name": "runs",
    "training_run_name": "runs",
    "FacerecModel": "pyfunc",
    "log_model_dir": "pyfunc",
    "logged_model_uri": "pyfunc",
    "face_dataset": "datasets",
    "log_dataset": "datasets",
    "log_training_inputs": "datasets",
    "evaluation_dataset": "datasets",
    "HEADLINE_METRICS": "compare",
    "log_comparison": "compare",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
