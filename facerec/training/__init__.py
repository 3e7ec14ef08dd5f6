"""Training: the fine-tuning loop and its collaborators (losses, strategies, checkpoints, schedule, DDP)."""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "CHECKPOINT_FILE": "trainer",
    "BEST_FILE": "trainer",
    "MODEL_SUBDIR": "trainer",
    "CHECKPOINT_FORMAT": "trainer",
    "RESUME_KEYS": "trainer",
    "ModelConfig": "trainer",
    "DataConfig": "trainer",
    "LossConfig": "trainer",
    "OptimConfig": "trainer",
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "train": "trainer",
    "default_run_name": "trainer",
    "load_records": "trainer",
    "make_loss": "trainer",
    "warmup_cosine": "trainer",
    "seed_everything": "trainer",
    "Distributed": "trainer",
    "resolve_device": "trainer",
    "init_distributed": "trainer",
    "Trainer": "trainer",
    "ContrastiveLoss": "losses",
    "InfoNCELoss": "losses",
    "SupConLoss": "losses",
    "StrategyConfig": "strategies",
    "apply_strategy": "strategies",
    "param_groups": "strategies",
    "parameter_counts": "strategies",
    "set_train_mode": "strategies",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
