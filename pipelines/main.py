"""Pipeline entry point ``main`` (MLproject default): crop -> finetune -> evaluate -> build_gallery.

    python -m pipelines.main [device=cpu] [data=PATH] [out=runs/main] [holdout=0.4]

On the embedded 50-identity sample by default, in a few minutes on a laptop CPU:
MTCNN crops (cached), fine-tuning (configs/train/quick.yaml) on the identities not
held out, the folder protocol on the held-out ones, and a gallery of every identity
enrolled with the fine-tuned model. One MLflow run (experiment ``facerec-main``)
holds the tracked stages as nested runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from facerec.errors import FacerecError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class MainJob:
    """The chain's settings; ``data`` None means the embedded sample."""

    data: str | None = None
    out: str = "runs/main"
    crops: str | None = None
    holdout: float = 0.4
    split_seed: int = 0
    train_config: str = str(ROOT / "configs" / "train" / "quick.yaml")
    device: str = "cpu"
    experiment: str = "facerec-main"


def stage(name: str, entry: Callable[[list[str]], int], argv: list[str]) -> None:
    """Run one pipeline's ``main(argv)``; a non-zero exit stops the chain."""
    log.info("stage %s: %s", name, " ".join(argv))
    code = entry(argv)
    if code:
        raise FacerecError(f"stage {name} failed (exit {code})")


def run(job: MainJob) -> dict[str, str]:
    """Run the four stages under one MLflow run; returns where their outputs are."""
    from facerec.data.datasets import sample_root
    from facerec.evaluation.protocols import EvalConfig, default_crops_dir, training_folder
    from facerec.tracking.runs import mlflow_run
    from pipelines import build_gallery, crop, evaluate, finetune

    data = Path(job.data).expanduser() if job.data else sample_root()
    eval_config = EvalConfig(
        protocol="folder",
        data=str(data),
        crops=job.crops,
        holdout=job.holdout,
        split_seed=job.split_seed,
        n_pairs=240,
        distractor_fraction=0.2,
    )
    crops = default_crops_dir(eval_config)
    out = Path(job.out)
    model_dir = out / "finetune" / "model"
    outputs = {"crops": str(crops), "model": str(model_dir), "gallery": str(out / "gallery")}
    with mlflow_run(
        job.experiment, f"main {data.name}", params={"job": job.__dict__}, tags={"facerec.data": str(data)}
    ):
        stage("crop", crop.main, ["--config", str(ROOT / "configs" / "crop.yaml"), f"src={data}", f"out={crops}"])
        train_dir = training_folder(eval_config, out / "train-identities")
        stage(
            "finetune",
            finetune.main,
            [
                "--config",
                job.train_config,
                "data.kind=folder",
                f"data.root={train_dir}",
                f"data.crops={train_dir}",
                "data.val_fraction=0.3",
                "data.val_pairs=80",
                f"output={out}",
                "run_name=finetune",
                f"device={job.device}",
                "overwrite=true",
            ],
        )
        stage(
            "evaluate",
            evaluate.main,
            [
                f"model={model_dir}",
                f"device={job.device}",
                "evaluate.protocol=folder",
                f"evaluate.data={data}",
                f"evaluate.crops={crops}",
                f"evaluate.holdout={job.holdout}",
                f"evaluate.split_seed={job.split_seed}",
                "evaluate.n_pairs=240",
                "evaluate.distractor_fraction=0.2",
            ],
        )
        stage(
            "build_gallery",
            build_gallery.main,
            [
                f"data={crops}",
                f"gallery={outputs['gallery']}",
                f"model.name={model_dir}",
                "model.pretrained=none",
                f"model.device={job.device}",
                "detect=false",
            ],
        )
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` overrides of MainJob, run the chain, print where the outputs are."""
    from facerec.config import load_config

    parser = argparse.ArgumentParser(prog="pipelines.main", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data=, out=, holdout=, device=, ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        outputs = run(load_config(MainJob, None, [o for o in args.overrides if o.partition("=")[2].strip()]))
    except FacerecError as exc:
        print(f"pipelines.main: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(outputs))
    print(f"try: facerec identify --gallery {outputs['gallery']} PHOTO.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
