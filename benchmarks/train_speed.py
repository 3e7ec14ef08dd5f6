"""Training speed: the trainer's loop against a bare loop over the same pre-decoded crops.

In ONE run, on the same model (architecture, size, batch) and torch threads:

- ``bare``: random P x K index batches from the decoded uint8 crops, ``/ 255``, the same torch
  augmentation (flip, small affine, colour jitter), forward, SupCon, backward, AdamW step;
  nothing else. This is the ceiling the trainer is held to (target: trainer >= 0.8 x bare).
- ``trainer``: ``Trainer._train_epoch`` as ``facerec train`` runs it with ``data.decode=once``
  and ``data.augment=light`` (P x K sampler, Batch assembly, gradient clipping, scheduler, tqdm).
- ``amp``: the same trainer with ``amp=true``: bf16 autocast where the CPU computes bf16 natively
  (AVX512-BF16 or AMX, see ``facerec.training.precision``); fp32 elsewhere, so ~1x there.
- ``strong``: the same trainer with ``data.augment=strong`` (albumentations per image in
  ``--workers`` DataLoader workers on the decoded crops): the measured cost of strong augmentation.
- ``per_step``: ``decode=per_step`` + ``augment=strong``, the pipeline before crops were decoded
  once (JPEG decode + resize + albumentations per image and step).
- ``ema``: the trainer with a weight average (``optim.ema``, ``--ema`` decay) updated after every
  step: the measured cost of the average (one fused lerp over the parameters and buffers).

Measurements alternate (A B C D, D C B A, ...) so that load from other processes hits all
alike; medians of wall-clock images/s and images per CPU-second (process + workers) are
printed with the load average and logged to MLflow (experiment ``facerec-benchmarks``).
Last, each pipeline produces batches without a model: its CPU milliseconds per image, the
data cost alone (the least sensitive figure to other load).

    python benchmarks/train_speed.py --data /work/shared/data/lfw --crops /work/cache/crops/lfw-224
    python benchmarks/train_speed.py --sample          # the embedded 50-identity sample
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from facerec.config import load_config
from facerec.data.transforms import BatchAugment
from facerec.errors import FacerecError
from facerec.training.batches import BatchSource, make_sampler
from facerec.training.config import TrainConfig
from facerec.training.ema import WeightAverage
from facerec.training.losses import SupConLoss
from facerec.training.precision import autocast_dtype, precision_name
from facerec.training.trainer import Trainer

log = logging.getLogger("benchmarks.train_speed")

TARGET_RATIO = 0.8
VARIANTS = ("bare", "trainer", "amp", "strong", "per_step", "ema")


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def make_trainer(args: argparse.Namespace, out: Path) -> Trainer:
    if args.sample:  # 50 identities: a larger share held out to draw the validation pairs from
        data = ["data.kind=sample", "data.val_fraction=0.2", "data.val_pairs=40"]
    else:
        data = ["data.kind=lfw", f"data.root={args.data}", f"data.crops={args.crops}", "data.val_fraction=0.05"]
    overrides = [
        f"model.name={args.model}",
        "model.pretrained=none",
        f"model.input_size={args.size}",
        "data.val_pairs=100",
        *data,
        "data.augment=light",
        "data.decode=once",
        "loss.kind=supcon",
        f"loss.P={args.P}",
        f"loss.K={args.K}",
        "optim.lr=0.0005",
        "epochs=1000",  # the schedule must not reach lr 0 during the measurement
        f"steps_per_epoch={args.steps}",
        f"num_workers={args.workers}",
        "device=cpu",
        "amp=false",
        f"output={out}",
        "run_name=train-speed",
    ]
    return Trainer(load_config(TrainConfig, None, overrides))


def pipeline(trainer: Trainer, augment: str, decode: str) -> BatchSource:
    """Another batch source over the same records and decoded pixels, with other data settings."""
    config = replace(trainer.config, data=replace(trainer.config.data, augment=augment, decode=decode))
    sampler = make_sampler(config, trainer.train_records)
    size = trainer.model.input_size
    return BatchSource(trainer.train_records, sampler, size, config, progress=False, cache=trainer.batches.cache)


def bare_loop(model: torch.nn.Module, cache: torch.Tensor, batch: int, K: int, seed: int) -> Callable[[int], None]:
    """``run(steps)``: SupCon steps on random P x K batches of ``cache``, the least a training step must do."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    loss_fn = SupConLoss(0.1)
    augment = BatchAugment.for_augment("light")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(batch // K).repeat_interleave(K)

    def run(steps: int) -> None:
        model.train()
        for _ in range(steps):
            index = torch.randint(len(cache), (batch,), generator=generator)
            images, _ = augment(cache[index].float().div_(255.0), generator)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def data_only_cpu(source: BatchSource, steps: int, epoch: int) -> float:
    """CPU milliseconds per image to produce ``source``'s batches without a model (process + workers)."""
    source.sampler.steps = steps
    start = cpu_seconds()
    images = sum(len(batch.images) for batch in source.epoch(epoch))
    return 1000 * (cpu_seconds() - start) / images


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--P", type=int, default=16)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per variant (not measured)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, order alternating; medians reported")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the strong/per_step pipelines")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (all variants)")
    parser.add_argument("--data", default=os.environ.get("FACEREC_DATA", "/work/shared/data/lfw"))
    parser.add_argument("--crops", default="/work/cache/crops/lfw-224")
    parser.add_argument("--sample", action="store_true", help="the embedded sample instead of LFW DevTrain crops")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--ema", type=float, default=0.999, help="decay of the ema variant's weight average")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("facerec", "benchmarks"):
        logging.getLogger(name).setLevel(logging.INFO)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            trainer = make_trainer(args, Path(tmp))
        except FacerecError as exc:
            if args.sample:
                raise
            log.warning("LFW DevTrain crops not usable (%s): falling back to the embedded sample", exc)
            args.sample = True
            trainer = make_trainer(args, Path(tmp))
        cache = trainer.batches.cache
        sources = {"trainer": trainer.batches}
        if "strong" in args.variants:
            sources["strong"] = pipeline(trainer, "strong", "once")
        if "per_step" in args.variants:
            sources["per_step"] = pipeline(trainer, "strong", "per_step")
        batch = args.P * args.K
        bare = bare_loop(copy.deepcopy(trainer.model), cache, batch, args.K, seed=1)
        epoch = iter(range(1, 10**6))

        amp = autocast_dtype(torch.device("cpu"), True)  # what ``amp: true`` picks on this CPU
        log.info("amp variant: %s (%s)", precision_name(amp), "native bf16" if amp else "no native bf16: fp32")

        def trained(
            source: BatchSource, dtype: torch.dtype | None = None, average: WeightAverage | None = None
        ) -> Callable[[int], None]:
            """``run(steps)``: an epoch of the trainer over ``source``, the network in ``dtype`` (None: fp32),
            updating ``average`` after each step (None: no weight average)."""

            def run(steps: int) -> None:
                source.sampler.steps = steps  # an epoch of ``steps`` batches
                trainer.batches = source
                trainer.amp_dtype = dtype
                trainer.ema = average
                trainer._train_epoch(next(epoch), deadline=None)

            return run

        def variant(name: str) -> Callable[[int], None]:
            if name == "bare":
                return bare
            if name == "amp":
                return trained(sources["trainer"], amp)
            if name == "ema":
                return trained(sources["trainer"], average=WeightAverage(trainer.model, args.ema))
            return trained(sources[name])

        runs = {name: variant(name) for name in args.variants}
        for run in runs.values():  # warm-up: allocator, kernels, code paths
            run(args.warmup)
        load_before = os.getloadavg()
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        images = args.steps * batch
        for round_ in range(args.rounds):
            order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            for name in order:
                start_wall, start_cpu = time.perf_counter(), cpu_seconds()
                runs[name](args.steps)
                wall[name].append(images / (time.perf_counter() - start_wall))
                cpu[name].append(images / (cpu_seconds() - start_cpu))
            log.info("round %d: %s", round_ + 1, ", ".join(f"{n} {wall[n][-1]:.1f}" for n in runs))
        load_after = os.getloadavg()
        data_cpu = {name: data_only_cpu(sources[name], args.steps, next(epoch)) for name in sources}

    median = {name: statistics.median(values) for name, values in wall.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    results = {f"{n}_images_per_s": v for n, v in median.items()}
    results.update({f"{n}_images_per_cpu_s": v for n, v in median_cpu.items()})
    results.update({f"{n}_data_cpu_ms_per_image": v for n, v in data_cpu.items()})
    results["decode_once_seconds"] = trainer.batches.decode_seconds or sources["trainer"].decode_seconds
    ratio = None
    if "bare" in median and "trainer" in median:
        ratio = median["trainer"] / median["bare"]
        paired = statistics.median(t / b for t, b in zip(wall["trainer"], wall["bare"]))
        results.update(trainer_over_bare=ratio, trainer_over_bare_paired=paired)
        results["trainer_over_bare_cpu"] = median_cpu["trainer"] / median_cpu["bare"]
    for name in ("amp", "strong", "per_step", "ema"):
        if name in median and "trainer" in median:
            results[f"{name}_over_trainer"] = median[name] / median["trainer"]
    results.update(load_avg_1m_before=load_before[0], load_avg_1m_after=load_after[0])

    data = "embedded sample" if args.sample else f"LFW peopleDevTrain crops ({args.crops})"
    print(
        f"{args.model} at {args.size} px, P x K = {args.P} x {args.K} ({batch} images/step), {args.steps} steps x "
        f"{args.rounds} rounds, {torch.get_num_threads()} torch threads, {args.workers} workers; {data}: "
        f"{len(trainer.train_records)} training crops ({cache.numel() / 2**20:.0f} MB decoded once in "
        f"{results['decode_once_seconds']:.1f} s)"
    )
    for name in runs:
        rounds = ", ".join(f"{v:.1f}" for v in wall[name])
        data_ms = f", data alone {data_cpu[name]:.2f} CPU-ms/image" if name in data_cpu else ""
        print(
            f"  {name:9s} {median[name]:7.1f} images/s (rounds: {rounds}), {median_cpu[name]:6.1f} images/CPU-s{data_ms}"
        )
    if ratio is not None:
        met = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(
            f"trainer / bare = {ratio:.3f} (target >= {TARGET_RATIO}: {met}); per round {results['trainer_over_bare_paired']:.3f}; "
            f"per CPU-second {results['trainer_over_bare_cpu']:.3f}"
        )
    for name in ("amp", "strong", "per_step", "ema"):
        if f"{name}_over_trainer" in results:
            what = {"amp": f"{precision_name(amp)} autocast", "ema": f"weight average {args.ema}"}.get(
                name, "light, decoded once"
            )
            print(f"{name} / trainer ({what}) = {results[f'{name}_over_trainer']:.3f}")
    print(
        "1/5/15-min load average: "
        f"{' '.join(f'{x:.1f}' for x in load_before)} -> {' '.join(f'{x:.1f}' for x in load_after)} "
        f"on {os.cpu_count()} cores"
    )
    if not args.no_mlflow:
        import mlflow

        from facerec.tracking.runs import mlflow_run

        params = {
            **{k: v for k, v in vars(args).items() if k != "no_mlflow"},
            "train_images": len(trainer.train_records),
        }
        params["variants"] = ",".join(args.variants)
        with mlflow_run("facerec-benchmarks", f"train-speed-{args.model}-{args.size}px", params=params):
            mlflow.log_metrics(results)
            for step in range(args.rounds):
                mlflow.log_metrics({f"round_{n}_images_per_s": wall[n][step] for n in runs}, step=step)
    return 0 if ratio is None or ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
