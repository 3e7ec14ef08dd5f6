"""Checkpoints of a training run: resume state, best weights and the RNG states they need.

``run_dir/checkpoint.pt`` holds everything ``resume=true`` needs to continue after the last
finished epoch (model, optimizer, scheduler, scaler, loss parameters, progress, config, every
RNG state); ``run_dir/best.pt`` holds the best-on-validation weights. Both are written
atomically and read with ``weights_only=True``: tensors and plain types only, no pickle.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from facerec.config import flatten, to_dict
from facerec.errors import ConfigError
from facerec.files import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
CHECKPOINT_FORMAT = 1
#: Config sections that must match for ``resume`` (the rest: budget, workers, device may change).
RESUME_KEYS = ("model", "data", "strategy", "loss", "optim", "batch_size", "steps_per_epoch", "seed")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class Progress:
    """Where a run stands: finished epochs, optimizer steps, best validation score, per-epoch rows."""

    epoch: int = 0
    global_step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": -1, "score": -math.inf})
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain types (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


class Checkpointer:
    """Saves and reads one run folder's checkpoint and best weights."""

    def __init__(self, run_dir: Path, config: Any) -> None:
        self.run_dir = run_dir
        self.config = config
        self.path = run_dir / CHECKPOINT_FILE
        self.best_path = run_dir / BEST_FILE

    def refuse_existing(self) -> None:
        """A fresh run must not silently mix with an earlier one in the same folder."""
        if self.path.exists():
            raise ConfigError(
                f"{self.run_dir} already holds a checkpoint: pass resume=true to continue it, "
                "overwrite=true to start over, or another run_name/output"
            )

    def save(self, parts: Mapping[str, Stateful], progress: Progress, run_id: str | None) -> None:
        """Write the resume state: ``parts`` (model, optimizer, ...) by name, progress, config, RNG."""
        state = {
            "format": CHECKPOINT_FORMAT,
            **asdict(progress),
            **{name: cpu_weights(p) if isinstance(p, nn.Module) else p.state_dict() for name, p in parts.items()},
            "config": to_dict(self.config),
            "rng": rng_state(),
            "mlflow_run_id": run_id,
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def read(self) -> dict[str, Any]:
        """The run's checkpoint, refused when the config changed in what shapes training."""
        if not self.path.is_file():
            raise ConfigError(f"resume=true but {self.path} does not exist")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError) as exc:
            raise ConfigError(f"cannot read checkpoint {self.path}: {str(exc).splitlines()[0]}") from exc
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{self.path} is not a facerec training checkpoint (format {CHECKPOINT_FORMAT})")
        saved, current = flatten(state["config"]), flatten(to_dict(self.config))
        for key in sorted(set(saved) | set(current)):
            if key.split(".")[0] in RESUME_KEYS and saved.get(key) != current.get(key):
                raise ConfigError(f"cannot resume {self.path}: {key} was {saved.get(key)!r}, now {current.get(key)!r}")
        return state

    def restore(self, state: dict[str, Any], parts: Mapping[str, Stateful]) -> tuple[Progress, str | None]:
        """Load ``parts`` and the RNG states from ``state``; (progress, MLflow run id that wrote it)."""
        for name, part in parts.items():
            if name in state:  # parts added after the checkpoint was written keep their fresh state
                part.load_state_dict(state[name])
        set_rng_state(state["rng"])
        progress = Progress(state["epoch"], state["global_step"], state["best"], state["history"])
        log.info("resuming %s after epoch %d (step %d)", self.run_dir, progress.epoch, progress.global_step)
        return progress, state.get("mlflow_run_id")

    def save_best(self, model: nn.Module) -> None:
        with atomic_path(self.best_path) as tmp:
            torch.save(cpu_weights(model), tmp)

    def load_best(self, model: nn.Module) -> bool:
        """Load the best weights into ``model``; False when none were saved."""
        if not self.best_path.is_file():
            return False
        model.load_state_dict(torch.load(self.best_path, map_location="cpu", weights_only=True))
        return True
