"""The MLproject parses with MLflow's own loader; each entry point runs its stage's one front end, which accepts it."""

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


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv[3:] if "=" in a and not a.startswith("-")]


#: entry point -> the facerec command it runs; the others run a pipeline module (pipelines/<name>.py).
COMMAND_OF = {"crop": "crop", "finetune": "train", "evaluate": "evaluate", "benchmark": "benchmark"}
PIPELINES = ENTRY_POINTS - set(COMMAND_OF)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_runs_its_stage_s_one_front_end(project, name):
    """A stage is the `facerec` command of that stage; only the chain and the tracked gallery build are pipelines."""
    from facerec.cli.commands import COMMANDS

    argv = command(project, name)
    if name in COMMAND_OF:
        assert argv[:4] == ["python", "-m", "facerec", COMMAND_OF[name]] and argv[3] in COMMANDS
    else:
        assert argv[:3] == ["python", "-m", f"pipelines.{name}"]
        module = importlib.import_module(f"pipelines.{name}")
        assert list(inspect.signature(module.main).parameters) == ["argv"]


def test_no_pipeline_module_duplicates_a_command():
    modules = {p.stem for p in (ROOT / "pipelines").glob("*.py") if not p.stem.startswith("_")}
    assert modules == PIPELINES


def parsed(project, name: str, **params: str):
    """The entry point's command line as the facerec CLI parses it (nothing runs)."""
    from facerec.cli import build_parser, parse_args

    return parse_args(build_parser(), command(project, name, **params)[3:])


def test_default_commands_are_accepted_by_their_configs(project, monkeypatch):
    """Each default command's arguments build its stage's config, empty parameters keeping the defaults."""
    from facerec.cli.commands.crop import crop_config_from_args
    from facerec.cli.commands.evaluate import flag_overrides
    from facerec.config import load_config
    from facerec.evaluation.config import EvalConfig
    from facerec.model_benchmark import load_benchmark_config
    from facerec.training.config import TrainConfig
    from pipelines.build_gallery import DEFAULT_CONFIG as GALLERY_CONFIG
    from pipelines.build_gallery import GalleryBuild
    from pipelines.main import MainJob

    monkeypatch.chdir(ROOT)  # MLflow runs the commands in the project folder
    crop = parsed(project, "crop")
    assert crop.src == "" and str(crop.out) == ".cache/crops/lfw-224"
    assert crop_config_from_args(crop).fallback == "center"  # from configs/crop.yaml
    train = parsed(project, "finetune")
    config = load_config(TrainConfig, train.config, train.overrides)
    assert config.device == "cpu" and config.run_name == "quick" and not config.data.crops and not config.data.root
    evaluate = parsed(project, "evaluate", protocol="lfw-view1", flip="true")
    config = load_config(EvalConfig, evaluate.config, [*evaluate.overrides, *flag_overrides(evaluate)])
    assert config.protocol == "lfw-view1" and config.flip and config.crop and config.data is None
    assert evaluate.model == "runs/train/quick/model" and evaluate.pretrained == "none"
    for experiment in ("quick", "lfw-view1", "lfw-view1-gpu", "zero-shot-view2"):
        benchmark = parsed(project, "benchmark", experiment=experiment)
        assert load_benchmark_config(benchmark.config, benchmark.overrides).name == experiment
    gallery = load_config(GalleryBuild, GALLERY_CONFIG, _overrides(command(project, "build_gallery")))
    assert gallery.model.name == "dlib-resnet" and not gallery.model.pretrained and not gallery.data
    main = load_config(MainJob, None, _overrides(command(project, "main")))
    assert main.device == "cpu" and main.out == "runs/main" and main.data is None


def test_unknown_entry_point_or_bad_protocol_is_refused(project):
    from mlflow.exceptions import ExecutionException

    from facerec.cli.commands.evaluate import flag_overrides
    from facerec.config import load_config
    from facerec.errors import ConfigError
    from facerec.evaluation.config import EvalConfig

    with pytest.raises(ExecutionException):
        project.get_entry_point("train")
    args = parsed(project, "evaluate", protocol="lfw-view3")
    with pytest.raises(ConfigError, match="protocol must be one of"):
        load_config(EvalConfig, ROOT / args.config, [*args.overrides, *flag_overrides(args)])


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_programs_start(project, name):
    argv = command(project, name)
    program = argv[:4] if name in COMMAND_OF else argv[:3]
    out = subprocess.run(
        [sys.executable, *program[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert "usage:" in out.stdout
