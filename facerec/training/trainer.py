"""Contrastive fine-tuning of an embedder: the loop, holding its collaborators.

One call, ``train(config)``, runs the whole stage: it reads the training
identities (LFW View 1 ``peopleDevTrain`` or an identity folder), carves an
identity-disjoint validation split out of them (never DevTest), fine-tunes
with the configured strategy and loss, validates every epoch (pair accuracy
and ROC AUC), keeps the best-on-validation weights, calibrates the
verification threshold on the validation pairs and writes a model directory
(``save_model_dir``: weights, config, fingerprint, threshold) that
``--model PATH`` accepts everywhere. LoRA adapters are merged into plain
weights before saving, so the directory loads with the plain architecture.

Collaborators, one job each: ``config`` (what to do), ``batches.BatchSource``
(pixels decoded once, augmented batches), ``losses.make_loss`` (the objective),
``schedule`` (warm-up + cosine), ``distributed.Distributed`` (rank, device, DDP;
only rank 0 validates, logs and saves), ``checkpoint.Checkpointer`` (resume state,
best weights, RNG), ``validation.Validator`` and ``run_logger.RunLogger`` (MLflow).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from facerec.config import to_dict
from facerec.data.datasets import generate_pairs
from facerec.errors import ConfigError, TrainingError
from facerec.models import Embedder, is_model_dir, load_model, save_model_dir
from facerec.models.lora import merge_lora
from facerec.training import config as configs
from facerec.training.batches import Batch, BatchSource, images_per_step, load_records, make_sampler
from facerec.training.checkpoint import Checkpointer, Progress, seed_everything
from facerec.training.config import ModelConfig, OptimConfig, TrainConfig
from facerec.training.distributed import init_distributed
from facerec.training.ema import WeightAverage
from facerec.training.losses import make_loss
from facerec.training.online_teacher import CENTRE_SAMPLE
from facerec.training.precision import autocast_dtype, precision_name
from facerec.training.run_logger import RunLogger
from facerec.training.schedule import warmup_cosine_scheduler
from facerec.training.strategies import StrategyConfig, apply_strategy, param_groups, parameter_counts, set_train_mode
from facerec.training.validation import Validator

log = logging.getLogger(__name__)

MODEL_SUBDIR = "model"


@dataclass
class TrainResult:
    """What a run produced: the model directory and its validation figures."""

    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    threshold: float
    seconds: float
    images_per_s: float
    run_id: str | None = None


def train(config: TrainConfig, run_name: str | None = None, nested: bool = False) -> TrainResult:
    """Fine-tune per ``config``; ``nested=True`` logs as a child of the active MLflow run."""
    return Trainer(config, run_name).fit(nested=nested)


def build_model(model: ModelConfig, strategy: StrategyConfig) -> tuple[Embedder, str]:
    """(the start model with ``strategy`` applied, a description of its start weights)."""
    options = {k: v for k, v in (("input_size", model.input_size), ("embedding_dim", model.embedding_dim)) if v}
    embedder = load_model(model.name, pretrained=model.pretrained, **options, **model.options)
    if is_model_dir(model.name):
        start = f"model-dir:{Path(model.name).resolve()} ({embedder.fingerprint})"
    else:
        start = f"{embedder.name}:{model.pretrained}"
    apply_strategy(embedder, strategy)
    return embedder, start


def make_optimizer(model: Embedder, loss_fn: nn.Module, optim: OptimConfig) -> tuple[torch.optim.AdamW, list]:
    """AdamW over the strategy's parameter groups and the objective's own parameters; (optimizer, trainable)."""
    groups = param_groups(model, optim.lr, optim.head_lr, optim.weight_decay)
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:  # e.g. a projection to a teacher's dimension, class centres of a margin loss
        groups.append({"name": "loss", "params": loss_params, "lr": optim.head_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups), [p for g in groups for p in g["params"]]


def final_model(model: Embedder, checkpointer: Checkpointer) -> tuple[Embedder, bool]:
    """A copy of ``model`` with the run's best weights, LoRA merged into plain weights; (model, merged)."""
    final = copy.deepcopy(model)
    checkpointer.load_best(final)
    merged = merge_lora(final) > 0
    final.invalidate_fingerprint()
    return final.eval(), merged


class Trainer:
    """The loop of one run: builds its collaborators, ``fit`` trains, selects, calibrates and saves.

    ~230 lines: construction wires the collaborators (batches, objective, optimizer,
    ``Checkpointer``, ``Validator``, ``RunLogger``, ``Distributed``, optionally a ``WeightAverage``);
    the rest is the loop itself.
    """

    def __init__(self, config: TrainConfig, run_name: str | None = None) -> None:
        configs.check(config)
        self.config = config
        self.run_name = run_name or config.run_name or configs.default_run_name(config)
        self.run_dir = Path(config.output).expanduser() / self.run_name
        self.checkpointer = Checkpointer(self.run_dir, config)
        saved = self.checkpointer.read() if config.resume else None
        if saved is None and not config.overwrite:
            self.checkpointer.refuse_existing()
        self.dist = init_distributed(config.device)
        seed_everything(config.seed)

        self.train_records, self.val_records, self.data_source = load_records(config.data, config.seed)
        self.val_pairs = generate_pairs(self.val_records, config.data.val_pairs, seed=config.seed, n_folds=10)
        self.model, self.start_weights = build_model(config.model, config.strategy)
        self.model.to(self.dist.device)
        #: the weights' moving average (rank 0, which validates and saves), None when optim.ema is off
        self.ema = WeightAverage(self.model, config.optim.ema) if config.optim.ema and self.dist.is_main else None
        #: trainable / total parameters of the embedder under the strategy (before LoRA is merged)
        self.parameter_counts = parameter_counts(self.model)
        self.loss_fn = make_loss(
            config.loss,
            embedding_dim=self.model.embedding_dim,
            num_classes=len({r.identity for r in self.train_records}),  # P x K labels index these identities
            train_paths=[str(r.path) for r in self.train_records],
            progress=self.dist.is_main,
        ).to(self.dist.device)
        #: what the student learned from (model.json ``teacher``), None without distillation
        self.teacher: dict[str, Any] | None = getattr(self.loss_fn, "teacher_info", None)
        sampler = make_sampler(config, self.train_records, self.dist.rank, self.dist.world_size)
        align = self.model.input_align  # the model's inputs: its crops' aligned chips
        online = getattr(self.loss_fn, "online_teacher", None)  # targets computed on each step's views
        if online is not None and online.align != align:
            raise ConfigError(
                f"loss.distill.online: the teacher's inputs (align={online.align}) must be the student's "
                f"(align={align}): both see one view"
            )
        self.batches = BatchSource(
            self.train_records,
            sampler,
            self.model.input_size,
            config,
            self.dist.rank,
            self._cuda,
            self.dist.is_main,
            align=align,
            view_size=online.input_size if online is not None else None,
        )
        #: autocast dtype of the network (None: fp32); fp16 alone needs the grad scaler
        self.amp_dtype = autocast_dtype(self.dist.device, config.amp)
        if online is not None:
            online.prepare(self.batches.sample_pixels(CENTRE_SAMPLE, config.seed), self.amp_dtype)
            self.teacher.update(online.mean_cosine)
        self.images_per_step = images_per_step(config)
        self.validator = (
            Validator(self.val_pairs, self.model.input_size, config.val_batch_size, config.num_workers, align)
            if self.dist.is_main
            else None
        )

        self.optimizer, self.trainable = make_optimizer(self.model, self.loss_fn, config.optim)
        self.loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        self.scheduler = warmup_cosine_scheduler(self.optimizer, config.epochs * sampler.steps, config.optim.warmup)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        log.info("precision: %s (amp: %s on %s)", precision_name(self.amp_dtype), config.amp, self.dist.device)

        self.progress = Progress()
        self.logger = RunLogger(config.experiment, self.run_name, enabled=self.dist.is_main)
        self.previous_run_id: str | None = None
        if saved is not None:
            self.progress, self.previous_run_id = self.checkpointer.restore(saved, self._stateful())
            self.model.invalidate_fingerprint()
        self.network: nn.Module = self.dist.wrap(self.model)

    @property
    def _cuda(self) -> bool:
        return self.dist.device.type == "cuda"

    def _stateful(self) -> dict[str, Any]:
        """What a checkpoint holds besides progress, config and RNG states."""
        parts = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}
        if self.loss_params:
            parts["loss"] = self.loss_fn
        if self.ema is not None:
            parts["ema"] = self.ema
        return parts

    # ---- training
    def _step(self, batch: Batch) -> float:
        device = self.dist.device
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            embeddings = self.network(batch.images)
        loss = self.loss_fn(embeddings.float(), batch)  # fp32: see facerec.training.precision
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {self.progress.global_step}: lower the learning rate"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.dist.average_gradients(self.loss_params)
        if self.config.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trainable, self.config.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.progress.global_step += 1
        return loss.item()

    def _train_epoch(self, epoch: int, deadline: float | None) -> dict[str, Any]:
        set_train_mode(self.network)
        self.loss_fn.train()
        loss_sum, steps, stopped = 0.0, 0, False
        start = time.perf_counter()
        batches = tqdm(
            self.batches.epoch(epoch),
            total=self.batches.steps,
            desc=f"epoch {epoch}/{self.config.epochs}",
            disable=not self.dist.is_main,
            leave=False,
        )
        for batch in batches:
            loss_sum += self._step(batch)
            steps += 1
            batches.set_postfix(loss=f"{loss_sum / steps:.4f}")
            if deadline is not None and self.dist.sum(float(time.monotonic() > deadline))[0] > 0:
                # every rank sees the same sum, so all stop after the same step
                stopped = True
                break
        batches.close()
        seconds = time.perf_counter() - start
        self.dist.sync_buffers(self.model)
        loss_sum, steps_all = self.dist.sum(loss_sum, steps)
        images = steps_all * self.images_per_step
        return {
            "train_loss": loss_sum / max(1, steps_all),
            "images": images,
            "train_seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "lr": self.scheduler.get_last_lr()[0],
            "steps": steps,
            "stopped": stopped,
        }

    def _record_validation(self, row: dict[str, Any]) -> None:
        """Validate (rank 0), keep the best weights, append ``row`` to the history, log it.

        With a weight average the average is validated and kept; the live weights' figures go
        beside it (``live_val_*``), so a run shows what the average adds.
        """
        selected = self.ema.embedder if self.ema is not None else self.model
        metrics, _, _ = self.validator(selected)
        row.update(validation_figures(metrics, "val_"))
        if self.ema is not None:
            row.update(validation_figures(self.validator(self.model)[0], "live_val_"))
        score = row["val_auc" if self.config.select_metric == "auc" else "val_accuracy"]
        if score > self.progress.best["score"]:
            self.progress.best = {"epoch": row["epoch"], "score": score}
            self.checkpointer.save_best(selected)
        self.progress.history.append(row)

    def fit(self, nested: bool = False) -> TrainResult:
        """Train, select, calibrate, save; returns what the run produced."""
        try:
            with self.logger.run(run_params(self), run_tags(self), nested, self.progress.history):
                self.logger.describe(self.config, self.model, self.train_records, self.val_records, len(self.val_pairs))
                return self._fit()
        finally:
            self.dist.close()

    def _fit(self) -> TrainResult:
        c, progress = self.config, self.progress
        start = time.monotonic()
        deadline = start + 60 * c.max_minutes if c.max_minutes else None
        if self.dist.is_main and progress.epoch == 0 and not progress.history:
            self._record_validation({"epoch": 0})
            self.logger.log_row(progress.history[-1])
        train_seconds, train_images = 0.0, 0
        while progress.epoch < c.epochs:
            progress.epoch += 1
            stats = self._train_epoch(progress.epoch, deadline)
            train_seconds += stats["train_seconds"]
            train_images += stats["images"]
            if self.dist.is_main:
                row = {
                    "epoch": progress.epoch,
                    **{k: stats[k] for k in ("train_loss", "images_per_s", "lr", "train_seconds")},
                }
                if stats["stopped"]:
                    row["partial"] = 1
                self._record_validation(row)
                self.checkpointer.save(self._stateful(), progress, self.logger.run_id)
                self.logger.log_row(row)
                live = f" (live weights {row['live_val_auc']:.4f})" if "live_val_auc" in row else ""
                log.info(
                    "epoch %d: loss %.4f, val acc %.4f, val AUC %.4f%s, %.1f img/s",
                    progress.epoch,
                    row["train_loss"],
                    row["val_accuracy"],
                    row["val_auc"],
                    live,
                    row["images_per_s"],
                )
            self.dist.barrier()
            if stats["stopped"]:
                log.warning("wall-clock budget of %.1f min reached during epoch %d", c.max_minutes, progress.epoch)
                break
        seconds = time.monotonic() - start
        images_per_s = train_images / train_seconds if train_seconds > 0 else 0.0
        if not self.dist.is_main:
            return TrainResult(self.run_dir / MODEL_SUBDIR, {}, progress.history, math.nan, seconds, images_per_s)
        return self._finish(seconds, images_per_s)

    # ---- final model
    def _finish(self, seconds: float, images_per_s: float) -> TrainResult:
        from facerec.evaluation.metrics import best_threshold

        final, merged = final_model(self.model, self.checkpointer)
        metrics, scores, labels = self.validator(final)
        threshold = best_threshold(scores, labels)
        best_epoch = self.progress.best["epoch"]
        summary = {
            "best_epoch": best_epoch,
            "threshold": threshold,
            "seconds": seconds,
            "images_per_s": images_per_s,
            "trainable_params": self.parameter_counts["trainable"],
            "decode_seconds": self.batches.decode_seconds,
            **{f"best_val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
        }
        info = {
            "start_weights": self.start_weights,
            "trained_on": self.data_source,
            "threshold_calibrated_on": f"validation split of the training identities ({len(self.val_pairs)} pairs, "
            f"{len({r.identity for r in self.val_records})} identities)",
            "lora_merged": merged,
            "best_epoch": best_epoch,
            "metrics": summary,
            "mlflow_run_id": self.logger.run_id,
        }
        if self.teacher:
            info["teacher"] = self.teacher
        model_dir = save_model_dir(
            final, self.run_dir / MODEL_SUBDIR, threshold=threshold, config=to_dict(self.config), info=info
        )
        log.info(
            "saved %s (best epoch %d, val acc %.4f, AUC %.4f, threshold %.4f)",
            model_dir,
            best_epoch,
            metrics["accuracy"],
            metrics["auc"],
            threshold,
        )
        self.logger.log_final(model_dir, summary, final.fingerprint, self.progress.history)
        history = self.progress.history
        return TrainResult(model_dir, summary, history, threshold, seconds, images_per_s, self.logger.run_id)


# ------------------------------------------------------------ what a run logs
def validation_figures(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The history row's validation columns (``<prefix>accuracy``, ``auc``, ``eer``) of ``metrics``."""
    return {f"{prefix}{key}": metrics[key] for key in ("accuracy", "auc", "eer")}


def run_params(trainer: Trainer) -> dict[str, Any]:
    """The config and the figures that follow from it (steps, images, identities, parameters)."""
    counts = trainer.parameter_counts
    run = {
        "steps_per_epoch": trainer.batches.steps,
        "world_size": trainer.dist.world_size,
        "device": str(trainer.dist.device),
        "precision": precision_name(trainer.amp_dtype),
        "train_images": len(trainer.train_records),
        "train_identities": len({r.identity for r in trainer.train_records}),
        "val_images": len(trainer.val_records),
        "val_pairs": len(trainer.val_pairs),
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
    }
    return {**to_dict(trainer.config), "run": run}


def run_tags(trainer: Trainer) -> dict[str, str]:
    tags = {
        "facerec.stage": "train",
        "facerec.start_weights": trainer.start_weights,
        "facerec.data": trainer.data_source,
        "facerec.strategy": trainer.config.strategy.kind,
    }
    if trainer.previous_run_id:
        tags["facerec.resumed_from_run"] = trainer.previous_run_id
    if trainer.teacher:
        tags["facerec.teacher"] = f"{trainer.teacher['spec']} ({trainer.teacher['fingerprint']})"
    return tags
