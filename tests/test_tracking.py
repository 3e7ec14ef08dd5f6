"""MLflow as the dashboard: the pyfunc flavor, registry aliases, dataset inputs, comparison charts, run names."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facerec.data.datasets import sample_root


@pytest.fixture()
def store(mlflow_store) -> str:
    """The throw-away store as this process's tracking URI and experiment (an earlier test's
    ``set_tracking_uri`` / ``set_experiment`` would otherwise win over the environment)."""
    from facerec.tracking.runs import configure_tracking, use_experiment

    configure_tracking()
    use_experiment("facerec-tests")
    return mlflow_store


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    """A small real model directory: resnet18 at 32 px, random init (seeded by the builder)."""
    from facerec.models import create_embedder, save_model_dir

    return save_model_dir(create_embedder("resnet18", input_size=32), tmp_path / "model")


@pytest.fixture()
def crops(tmp_path) -> Path:
    """Five face images of two identities from the embedded sample, in a folder of their own."""
    folder = tmp_path / "crops"
    people = sorted(p for p in sample_root().iterdir() if p.is_dir())[:2]
    for person, count in zip(people, (3, 2)):
        (folder / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.jpg"))[:count]:
            shutil.copy(image, folder / person.name / image.name)
    return folder


def _embed_cli(crops: Path, model: str, out: Path) -> tuple[np.ndarray, list[Path]]:
    """``facerec embed`` on ``crops``: the vectors and the image of each row."""
    from facerec.cli import main

    assert main(["embed", str(crops), "--model", model, "--out", str(out), "--workers", "0"]) == 0
    rows = [crops / line for line in out.with_suffix(".paths.txt").read_text().splitlines()]
    return np.load(out), rows


def test_pyfunc_predict_equals_facerec_embed_for_paths_and_bytes(store, model_dir, crops, tmp_path):
    import mlflow
    import pandas as pd

    from facerec.tracking.pyfunc import log_model_dir

    expected, rows = _embed_cli(crops, str(model_dir), tmp_path / "cli.npy")
    with mlflow.start_run():
        info = log_model_dir(model_dir)
    model = mlflow.pyfunc.load_model(info.model_uri)
    by_path = model.predict(pd.DataFrame({"path": [str(p) for p in rows]}))
    by_bytes = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in rows]}))
    assert by_path.dtype == np.float32 and by_path.shape == expected.shape == (5, 512)
    np.testing.assert_allclose(by_path, expected, atol=1e-5)
    np.testing.assert_allclose(by_bytes, expected, atol=1e-5)
    assert model.metadata.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 512)
    assert model.metadata.get_input_schema().input_names() == ["path", "image"]


def test_a_registered_champion_loads_by_alias_in_pyfunc_and_in_facerec(store, model_dir, crops, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from facerec.models import create_embedder, load_model, load_model_dir, save_model_dir
    from facerec.tracking.registry import register_model_dir

    with mlflow.start_run() as run:
        pass
    with mlflow.start_run() as other:
        pass
    other_dir = save_model_dir(create_embedder("resnet18", input_size=32, seed=1), tmp_path / "other")
    first = register_model_dir(model_dir, run.info.run_id, metric="accuracy", value=0.7, protocol="folder", label="a")
    again = register_model_dir(model_dir, other.info.run_id, metric="accuracy", value=0.7, protocol="folder", label="a")
    worse = register_model_dir(other_dir, other.info.run_id, metric="accuracy", value=0.6, protocol="folder", label="b")
    assert first["registered"] and first["alias_moved"]
    assert not again["registered"] and again["version"] == first["version"]  # one model, one version
    assert not again["alias_moved"] and again["uri"] == "models:/facerec@champion"  # it holds the alias already
    assert again["model_uri"] == first["model_uri"]  # and not logged again
    assert worse["registered"] and not worse["alias_moved"]  # the alias stays with the better version
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("facerec", "champion").version) == str(first["version"]) == "1"
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'facerec'")) == [1, 2]
    assert client.get_registered_model("facerec").description.startswith("facerec face embedders")

    assert load_model("models:/facerec@champion").fingerprint == load_model_dir(model_dir).fingerprint
    images = sorted(crops.rglob("*.jpg"))
    expected, rows = _embed_cli(crops, "models:/facerec@champion", tmp_path / "alias.npy")
    predicted = mlflow.pyfunc.load_model("models:/facerec@champion").predict(
        pd.DataFrame({"path": [str(p) for p in rows]})
    )
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    assert len(images) == len(rows)


def test_pyfunc_input_errors_are_one_line_image_errors(store, model_dir):
    import pandas as pd

    from facerec.errors import ImageError
    from facerec.tracking.pyfunc import read_images

    with pytest.raises(ImageError, match="'path' or 'image' column"):
        read_images(pd.DataFrame({"x": ["a"]}))
    with pytest.raises(ImageError, match="row 0: cannot read image bytes"):
        read_images(pd.DataFrame({"image": [b"not an image"]}))
    with pytest.raises(ImageError, match="no such file"):
        read_images(["/nonexistent/face.jpg"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_on_loopback_with_the_champion(store, model_dir, crops, tmp_path):
    import httpx
    import mlflow

    from facerec.tracking.registry import register_model_dir

    with mlflow.start_run() as run:
        pass
    register_model_dir(model_dir, run.info.run_id, metric="accuracy", value=0.7, protocol="folder")
    expected, rows = _embed_cli(crops, str(model_dir), tmp_path / "cli.npy")
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/facerec@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    server = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer within 240 s"
            time.sleep(1)
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(p.read_bytes()).decode()] for p in rows],
            }
        }
        answer = httpx.post(f"{url}/invocations", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(np.asarray(answer.json()["predictions"], np.float32), expected, atol=1e-5)
        missing = {"dataframe_split": {"columns": ["path"], "data": [["/nonexistent/face.jpg"]]}}
        bad = httpx.post(f"{url}/invocations", json=missing, timeout=60)
        assert bad.status_code == 400 and "no such file" in bad.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dataset_digest_follows_the_protocol_file_and_the_split(tmp_path):
    from facerec.tracking.datasets import face_dataset, file_digest

    protocol = tmp_path / "pairsDevTest.txt"
    protocol.write_text("500\nA 1 2\n")
    first = face_dataset(
        "lfw",
        "pairsDevTest",
        tmp_path,
        images=["a/1.jpg", "a/2.jpg"],
        identities=["a"],
        pairs=1,
        protocol_files=[protocol],
        members=["a/1.jpg a/2.jpg 1"],
    )
    profile = first.profile
    assert first.name == "lfw/pairsDevTest"
    assert profile == {
        "split": "pairsDevTest",
        "identities": 1,
        "images": 2,
        "pairs": 1,
        "protocol_files": ["pairsDevTest.txt"],
        "protocol_sha256": {"pairsDevTest.txt": file_digest(protocol)},
    }
    assert json.loads(first.to_dict()["profile"]) == profile
    same = face_dataset("lfw", "pairsDevTest", tmp_path, protocol_files=[protocol], members=["a/1.jpg a/2.jpg 1"])
    other_split = face_dataset("lfw", "pairsDevTest", tmp_path, protocol_files=[protocol], members=["a/1.jpg"])
    protocol.write_text("500\nA 1 3\n")
    edited = face_dataset("lfw", "pairsDevTest", tmp_path, protocol_files=[protocol], members=["a/1.jpg a/2.jpg 1"])
    assert first.digest == same.digest
    assert len({first.digest, other_split.digest, edited.digest}) == 3


def test_a_training_run_logs_its_training_and_validation_data(store, tmp_path):
    import mlflow

    from facerec.config import load_config
    from facerec.training.trainer import TrainConfig, train

    overrides = [
        "model.name=resnet18",
        "model.input_size=32",
        "data.kind=sample",
        "data.val_fraction=0.2",
        "data.val_pairs=40",
        "epochs=1",
        "steps_per_epoch=1",
        "batch_size=4",
        "num_workers=0",
        "device=cpu",
        f"output={tmp_path / 'runs'}",
    ]
    result = train(load_config(TrainConfig, None, overrides))
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.info.run_name == "resnet18@32px contrastive-full lfw-sample"
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation"}
    train_profile, val_profile = (json.loads(inputs[k].profile) for k in ("training", "validation"))
    assert train_profile["identities"] + val_profile["identities"] == 50 and val_profile["identities"] == 10
    assert train_profile["images"] + val_profile["images"] == 200 and val_profile["pairs"] == 40
    assert inputs["training"].name == "lfw-sample/identities:train"
    assert inputs["training"].digest != inputs["validation"].digest
    # The trained model is logged as a pyfunc model of the run (registrable as models:/).
    from facerec.tracking.pyfunc import logged_model_uri

    assert logged_model_uri(result.run_id) is not None


def test_roc_chance_line_is_tar_equals_far_on_the_log_axis():
    from facerec.evaluation import plots

    figure = plots.roc_figure({"m": (np.array([0.0, 1e-3, 0.1, 1.0]), np.array([0.0, 0.2, 0.7, 1.0]))})
    (chance,) = [line for line in figure.axes[0].lines if line.get_label().startswith("chance")]
    far, tar = chance.get_xdata(), chance.get_ydata()
    np.testing.assert_allclose(tar, far)
    assert far.min() == pytest.approx(1e-3) and far.max() == pytest.approx(1.0) and len(far) >= 50
    # On the log axis the drawn line passes through TAR = 1e-3 at FAR = 1e-3 and 0.1 at 0.1, not 0.25 at 1e-3.
    for x in (1e-3, 1e-2, 0.1, 0.5):
        assert np.interp(np.log10(x), np.log10(far), tar) == pytest.approx(x, rel=0.05)
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_comparison_logs_tables_and_one_chart_per_measured_headline_metric(store, tmp_path):
    import mlflow

    from facerec.tracking.compare import HEADLINE_METRICS, headline, log_comparison

    by_model = {
        "a@32px": {
            "accuracy": 0.7,
            "accuracy_std": 0.02,
            "auc": 0.8,
            "tar_far_1e-2": 0.1,
            "tar_far_1e-3": 0.05,
            "train_minutes": 1.5,
            "images_per_s": 40.0,
        },
        "b@32px": {
            "accuracy": 0.75,
            "accuracy_std": 0.03,
            "auc": 0.82,
            "tar_far_1e-2": 0.2,
            "tar_far_1e-3": 0.06,
            "train_minutes": 2.5,
            "images_per_s": 30.0,
        },
    }
    assert math.isnan(headline(by_model["a@32px"])["rank1"])  # not measured: NaN, but the key is there
    with mlflow.start_run() as run:
        logged = log_comparison(by_model, {"md": "| a |\n", "html": "<table></table>"}, "t", tmp_path / "out")
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "compare")}
    expected = {f"compare/{key}.png" for key, _, _ in HEADLINE_METRICS if key != "rank1"}
    assert artifacts == expected and expected <= set(logged)
    assert (tmp_path / "out" / "results.html").read_text() == "<table></table>"
    assert (tmp_path / "out" / "compare" / "accuracy.png").stat().st_size > 1000


def test_gallery_run_name_says_model_size_recipe_and_data(model_dir):
    from pipelines.build_gallery import GalleryBuild, ModelChoice, gallery_run_name

    summary = {"model": {"name": "resnet18", "input_size": 32}, "data": str(sample_root())}
    job = GalleryBuild(model=ModelChoice(name=str(model_dir)))
    assert gallery_run_name(job, summary) == "gallery resnet18@32px trained+flat-index lfw-sample"
    zero = GalleryBuild(model=ModelChoice(name="clip-vit-b-32", pretrained="openai"))
    summary["model"] = {"name": "clip-vit-b-32", "input_size": 224}
    assert gallery_run_name(zero, summary) == "gallery clip-vit-b-32@224px zero-shot:openai+flat-index lfw-sample"


@pytest.mark.slow
def test_ui_check_finds_runs_metrics_inputs_and_the_champion_through_a_real_mlflow_server(tmp_path, monkeypatch):
    """benchmarks/ui_check.py's REST part: a small benchmark's store served by ``mlflow server`` (about 2 min)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ui_check

    made = ui_check.make_store(tmp_path / "store")
    assert made["champion"]["uri"] == "models:/facerec-quick@champion"
    with ui_check.mlflow_server(tmp_path / "store") as url:
        assert url.startswith("http://127.0.0.1:")
        ids = ui_check.check_rest(url)
    assert ids["parent_run_id"] == made["parent_run_id"] and len(ids["child_run_ids"]) == 2
    assert ids["source"] == made["champion"]["model_uri"]
    pages = ui_check.ui_pages(url, ids)
    assert set(pages) == {"experiments.png", "benchmark-artifacts.png", "model.png", "compare-runs.png"}
