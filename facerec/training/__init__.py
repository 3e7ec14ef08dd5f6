"""Training: the fine-tuning loop and its collaborators.

``config`` (TrainConfig and its sections), ``batches`` (decoded-once pixels, augmented
batches), ``losses`` (losses and the objective factory), ``strategies`` (what trains),
``schedule`` (warm-up + cosine), ``distributed`` (torchrun set-up), ``checkpoint``
(resume state, best weights, RNG), ``validation``, ``run_logger`` (MLflow) and
``trainer`` (the loop holding them; ``train(config)``).
"""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "ModelConfig": "config",
    "DataConfig": "config",
    "LossConfig": "config",
    "OptimConfig": "config",
    "TrainConfig": "config",
    "default_run_name": "config",
    "Batch": "batches",
    "BatchSource": "batches",
    "load_records": "batches",
    "make_sampler": "batches",
    "CHECKPOINT_FILE": "checkpoint",
    "BEST_FILE": "checkpoint",
    "CHECKPOINT_FORMAT": "checkpoint",
    "RESUME_KEYS": "checkpoint",
    "Checkpointer": "checkpoint",
    "Progress": "checkpoint",
    "seed_everything": "checkpoint",
    "warmup_cosine": "schedule",
    "Distributed": "distributed",
    "resolve_device": "distributed",
    "init_distributed": "distributed",
    "RunLogger": "run_logger",
    "Validator": "validation",
    "MODEL_SUBDIR": "trainer",
    "TrainResult": "trainer",
    "Trainer": "trainer",
    "train": "trainer",
    "ContrastiveLoss": "losses",
    "InfoNCELoss": "losses",
    "SupConLoss": "losses",
    "make_loss": "losses",
    "StrategyConfig": "strategies",
    "apply_strategy": "strategies",
    "param_groups": "strategies",
    "parameter_counts": "strategies",
    "set_train_mode": "strategies",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
