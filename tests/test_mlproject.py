"""The MLproject parses with MLflow's own loader; every entry point's command reaches a pipeline that accepts it."""

from __future__ import annotations

import importlib
import inspect
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"main", "crop", "finetune", "evaluate", "benchmark", "build_gallery"}


@pytest.fixture(scope="module")
def project():
    from mlflow.projects import _project_spec

    return _project_spec.load_project(str(ROOT))


def command(project, name: str, **params: str) -> list[str]:
    return shlex.split(project.get_entry_point(name).compute_command(params, storage_dir=str(ROOT)))


def test_project_declares_every_entry_point_and_a_python_env(project):
    from mlflow.utils.environment import _PythonEnv

    assert project.name == "facerec"
    assert set(project._entry_points) == ENTRY_POINTS
    assert project.env_type == "python_env"
    env = _PythonEnv.from_yaml(project.env_config_path)
    assert env.python == "3.11" and "." in env.dependencies


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_runs_a_pipeline_main(project, name):
    argv = command(project, name)
    assert argv[:3] == ["python", "-m", f"pipelines.{name}"]
    module = importlib.import_module(f"pipelines.{name}")
    assert list(inspect.signature(module.main).parameters) == ["argv"]


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv[3:] if "=" in a and not a.startswith("-")]


def test_default_commands_are_accepted_by_their_configs(project):
    """Each default command's arguments build the pipeline's config (nothing runs)."""
    from facerec.config import load_config
    from facerec.model_benchmark import load_benchmark_config
    from facerec.training.config import TrainConfig
    from pipelines.build_gallery import DEFAULT_CONFIG as GALLERY_CONFIG
    from pipelines.build_gallery import GalleryBuild
    from pipelines.crop import DEFAULT_CONFIG as CROP_CONFIG
    from pipelines.crop import CropJob
    from pipelines.evaluate import DEFAULT_CONFIG as EVAL_CONFIG
    from pipelines.evaluate import EvaluateJob
    from pipelines.main import MainJob

    crop = load_config(CropJob, CROP_CONFIG, _overrides(command(project, "crop")))
    assert crop.out == ".cache/crops/lfw-224" and not crop.src
    finetune = command(project, "finetune")
    train = load_config(TrainConfig, ROOT / finetune[finetune.index("--config") + 1], _overrides(finetune))
    assert train.device == "cpu" and train.run_name == "quick" and not train.data.crops
    job = load_config(
        EvaluateJob, EVAL_CONFIG, _overrides(command(project, "evaluate", protocol="lfw-view1", flip="true"))
    )
    assert job.evaluate.protocol == "lfw-view1" and job.evaluate.flip and job.model == "runs/train/quick/model"
    gallery = load_config(GalleryBuild, GALLERY_CONFIG, _overrides(command(project, "build_gallery")))
    assert gallery.model.name == "clip-vit-b-32" and not gallery.data
    main = load_config(MainJob, None, [o for o in _overrides(command(project, "main")) if not o.endswith("=")])
    assert main.device == "cpu" and main.out == "runs/main"
    for experiment in ("quick", "lfw-view1", "lfw-view1-gpu", "zero-shot-view2"):
        argv = command(project, "benchmark", experiment=experiment)
        kept = [o for o in _overrides(argv) if o.partition("=")[2]]  # what pipelines.benchmark keeps
        config = load_benchmark_config(ROOT / argv[argv.index("--config") + 1], kept)
        assert config.name == experiment


def test_unknown_entry_point_or_bad_protocol_is_refused(project):
    from mlflow.exceptions import ExecutionException

    from facerec.config import load_config
    from facerec.errors import ConfigError
    from pipelines.evaluate import DEFAULT_CONFIG, EvaluateJob

    with pytest.raises(ExecutionException):
        project.get_entry_point("train")
    with pytest.raises(ConfigError):
        load_config(EvaluateJob, DEFAULT_CONFIG, _overrides(command(project, "evaluate", protocol="lfw-view3")))


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_pipeline_modules_start_as_scripts(name):
    out = subprocess.run(
        [sys.executable, "-m", f"pipelines.{name}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert "usage:" in out.stdout
