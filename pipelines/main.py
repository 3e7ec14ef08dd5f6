"""Pipeline entry point ``main`` (MLproject default): crop -> finetune -> evaluate -> build_gallery.

    python -m pipelines.main [device=cpu] [data=PATH] [out=runs/main] [holdout=0.4]

On the embedded 50-identity sample by default, in a few minutes on a laptop CPU:
MTCNN crops (cached), fine-tuning (configs/train/quick.yaml, random initial weights) on
the identities not held out, the folder protocol on the held-out ones for the fine-tuned
demo model *and* for the default face model (``dlib-resnet``, real weights, offline), and
a gallery of every identity enrolled with ``gallery_model`` (default ``dlib-resnet``, so the
printed ``try:`` line recognises people). One MLflow run (experiment ``facerec-main``) holds
the tracked stages as nested runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from facerec.cli import run_reporting
from facerec.config import check_config

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
    #: The model that recognises people in the chain's gallery (and is evaluated next to the demo).
    gallery_model: str = "dlib-resnet"

    def __post_init__(self) -> None:
        check_config(self, [(0 < self.holdout < 1, f"holdout must lie in (0, 1), got {self.holdout}")])


def run(job: MainJob) -> dict[str, str]:
    """Run the four stage functions under one MLflow run; returns where their outputs are."""
    import dataclasses

    from facerec.config import load_config
    from facerec.data.datasets import sample_root
    from facerec.evaluation.protocols import EvalConfig, default_crops_dir, evaluate, format_metrics, training_folder
    from facerec.faces.crop import CropConfig, run_crop
    from facerec.tracking.runs import mlflow_run
    from facerec.training import TrainConfig, train
    from pipelines.build_gallery import GalleryBuild, ModelChoice, run_build

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
        log.info("stage crop: %s -> %s", data, crops)
        run_crop(data, crops, load_config(CropConfig, ROOT / "configs" / "crop.yaml"))

        train_dir = training_folder(eval_config, out / "train-identities")
        log.info("stage finetune: %s identities -> %s", train_dir, model_dir)
        train_config = load_config(TrainConfig, job.train_config)
        data_config = dataclasses.replace(
            train_config.data, kind="folder", root=str(train_dir), crops=str(train_dir), val_fraction=0.3, val_pairs=80
        )
        train_config = dataclasses.replace(
            train_config, data=data_config, output=str(out), run_name="finetune", device=job.device, overwrite=True
        )
        train(train_config)

        log.info("stage evaluate: %s on the held-out identities", model_dir)
        result = evaluate(str(model_dir), eval_config, pretrained="none", device=job.device)
        print(f"fine-tuned demo model (random initial weights):\n{format_metrics(result)}")
        log.info("stage evaluate: %s on the same held-out identities", job.gallery_model)
        result = evaluate(job.gallery_model, eval_config, device=job.device)
        print(f"{job.gallery_model} (the default face model):\n{format_metrics(result)}")

        log.info("stage build_gallery: %s -> %s with %s", crops, outputs["gallery"], job.gallery_model)
        model = ModelChoice(name=job.gallery_model, device=job.device)
        run_build(GalleryBuild(data=str(crops), gallery=outputs["gallery"], model=model, detect=False))
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` overrides of MainJob, run the chain, print where the outputs are."""
    from facerec.config import load_config

    parser = argparse.ArgumentParser(prog="pipelines.main", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data=, out=, holdout=, device=, ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    outputs: dict[str, str] = {}

    def job() -> None:
        outputs.update(run(load_config(MainJob, None, args.overrides)))

    code = run_reporting("pipelines.main", job)
    if code:
        return code
    print(json.dumps(outputs))
    print(f"try: facerec identify --gallery {outputs['gallery']} PHOTO.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
