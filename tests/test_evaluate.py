"""Evaluation protocols: splits, embed-once wiring, metrics of a perfect embedder, a real model, MLflow logging."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from facerec.data.datasets import group_by_identity, read_identity_folder
from facerec.errors import DataError
from facerec.evaluation import protocols as ev
from facerec.evaluation.protocols import EvalConfig, EvalResult, evaluate_model, protocol_set, split_gallery


def _identity_embedder(monkeypatch, calls: list[list[Path]], dim: int = 64):
    """Patch embed_paths with an oracle: one unit vector per identity (the folder name)."""
    import facerec.models.inference

    def fake_embed_paths(embedder, paths, batch_size=64, num_workers=None, progress=True, flip=False):
        calls.append(list(paths))
        names = sorted({Path(p).parent.name for p in paths})
        vectors = np.zeros((len(paths), dim), np.float32)
        for i, p in enumerate(paths):
            vectors[i, names.index(Path(p).parent.name) % dim] = 1.0
        return vectors

    monkeypatch.setattr(facerec.models.inference, "embed_paths", fake_embed_paths)


class _Oracle:
    name, input_size, embedding_dim, threshold = "oracle", 8, 64, 0.5
    fingerprint = "oracle/8px/64d/0"


def test_folder_protocol_holds_out_identities_and_draws_balanced_pairs(sample_dir):
    config = EvalConfig(holdout=0.4, split_seed=3, n_pairs=120, n_folds=10)
    eval_set = protocol_set(config)
    all_names = set(group_by_identity(read_identity_folder(sample_dir)))
    held_out = {r.identity for r in eval_set.records}
    assert len(held_out) == 20 and held_out < all_names
    pair_names = {p.path1.parent.name for p in eval_set.pairs} | {p.path2.parent.name for p in eval_set.pairs}
    assert pair_names <= held_out
    labels = np.array([p.same for p in eval_set.pairs])
    assert len(labels) == 120 and labels.sum() == 60
    assert sorted(set(eval_set.folds.tolist())) == list(range(10))
    # Same seed, same pairs; another seed, other pairs.
    assert protocol_set(config).pairs == eval_set.pairs
    assert protocol_set(EvalConfig(holdout=0.4, split_seed=3, n_pairs=120, seed=1)).pairs != eval_set.pairs


def test_folder_protocol_caps_pairs_at_what_the_identities_allow():
    eval_set = protocol_set(EvalConfig(holdout=0.2, n_pairs=1000))  # 10 identities x 4 images: 60 matched pairs
    labels = np.array([p.same for p in eval_set.pairs])
    assert labels.sum() == 60 and (~labels).sum() == 60


def test_gallery_split_uses_first_image_and_single_image_identities_as_distractors(sample_dir):
    records = read_identity_folder(sample_dir)
    singles = [r for r in records if r.path.name.endswith("_0004.jpg")][:3]  # three one-image identities
    multi = [r for r in records if r.identity not in {s.identity for s in singles}]
    gallery, probes, distractors = split_gallery(multi + singles, distractor_fraction=0.25, seed=0)
    assert len(gallery) == 35 and len(probes) == 35 * 3
    assert all(g.path.name.endswith("_0001.jpg") for g in gallery)
    assert {g.identity for g in gallery} == {p.identity for p in probes}
    assert len(distractors) == 3 + 12
    assert not {d.identity for d in distractors} & {g.identity for g in gallery}


def test_evaluate_embeds_each_image_once_and_a_perfect_embedder_scores_perfectly(monkeypatch):
    calls: list[list[Path]] = []
    _identity_embedder(monkeypatch, calls)
    config = EvalConfig(holdout=0.5, n_pairs=200, distractor_fraction=0.2, max_rank=5, scatter_identities=4)
    eval_set = protocol_set(config)
    result = evaluate_model(
        _Oracle(), eval_set, config, model={"label": "oracle", "pretrained": "none"}, progress=False
    )
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == len(eval_set.unique_paths()) == 100
    m = result.metrics
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0 and m["eer"] == 0.0 and m["tar_far_1e-3"] == 1.0
    assert m["accuracy_at_model_threshold"] == 1.0
    assert result.verification["confusion"] == [[100, 0], [0, 100]]
    assert m["rank1"] == 1.0 and m["macro_f1"] == 1.0 and m["dir_far_1e-2"] == 1.0
    assert m["n_gallery"] == 20 and m["n_distractors"] == 5
    assert result.cmc.shape == (5,) and np.all(result.cmc == 1.0)
    assert result.scatter_vectors.shape == (16, 64) and len(set(result.scatter_names.tolist())) == 4


def test_scores_follow_the_pairs_not_the_embedding_order(monkeypatch):
    """Shuffled identities: an oracle whose vectors are permuted per path must still be perfect."""
    calls: list[list[Path]] = []
    _identity_embedder(monkeypatch, calls)
    config = EvalConfig(holdout=0.3, n_pairs=60, identification=False)
    eval_set = protocol_set(config)
    eval_set.records = []
    eval_set.pairs = eval_set.pairs[::-1]
    result = evaluate_model(_Oracle(), eval_set, config, model={"label": "oracle"}, progress=False)
    assert result.identification is None and result.metrics["accuracy"] == 1.0


def test_result_round_trips_through_json_and_npz(tmp_path, monkeypatch):
    _identity_embedder(monkeypatch, [])
    config = EvalConfig(holdout=0.3, n_pairs=60)
    result = evaluate_model(_Oracle(), protocol_set(config), config, model={"label": "oracle"}, progress=False)
    loaded = EvalResult.load(result.save(tmp_path / "r"))
    assert loaded.metrics == result.metrics
    assert (
        np.array_equal(loaded.scores, result.scores) and loaded.scatter_names.tolist() == result.scatter_names.tolist()
    )
    assert json.loads((tmp_path / "r" / "result.json").read_text())["protocol"] == "folder"
    with pytest.raises(DataError):
        EvalResult.load(tmp_path / "missing")


def test_real_model_with_flip_tta_and_mlflow_logging(mlflow_store, tmp_path):
    """resnet18 (random init, 64 px) on raw sample photos: every metric present and in range, run logged."""
    import mlflow

    config = EvalConfig(crop=False, holdout=0.3, n_pairs=80, flip=True, distractor_fraction=0.2, projection="pca")
    result = ev.evaluate("resnet18", config, pretrained="none", input_size=64, progress=False)
    m = result.metrics
    for key in (
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar_far_1e-2",
        "tar_far_1e-3",
        "precision",
        "recall",
        "f1",
        "rank1",
        "rank5",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "dir_far_1e-2",
    ):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["images_per_s"] > 0 and m["parameters"] > 1e6 and m["n_images"] == 60
    run = mlflow.search_runs(experiment_names=["facerec-evaluate"], output_format="list")[0]
    assert run.info.run_name == "resnet18@64px zero-shot:none folder:lfw-sample"  # model, size, recipe, data
    # The evaluation data is the run's dataset input: the held-out 30% (15 identities), 80 pairs, 60 images.
    (evaluated,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in evaluated.tags} == {"mlflow.data.context": "evaluation"}
    assert evaluated.dataset.name == "lfw-sample/held-out-0.3-seed0:80pairs-seed0"
    profile = json.loads(evaluated.dataset.profile)
    assert profile["identities"] == 15 and profile["images"] == m["n_images"] and profile["pairs"] == 80
    assert run.data.metrics["accuracy"] == pytest.approx(m["accuracy"])
    assert run.data.params["eval.flip"] == "True"
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())  # beside the sqlite store, not ./mlruns
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/roc.png", "plots/cmc.png", "plots/confusion.png", "plots/embeddings.png"}
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "cmc")
    assert [h.step for h in history] == list(range(1, 11))


def test_flip_changes_embeddings_but_not_the_protocol():
    from facerec.models import load_model

    config = EvalConfig(crop=False, holdout=0.2, n_pairs=40, identification=False)
    model = load_model("resnet18", pretrained="none", input_size=32)
    eval_set = protocol_set(config)
    plain = evaluate_model(model, eval_set, config, progress=False)
    flipped = evaluate_model(model, eval_set, dataclasses.replace(config, flip=True), progress=False)
    assert plain.labels.tolist() == flipped.labels.tolist()
    assert not np.allclose(plain.scores, flipped.scores)


@pytest.mark.lfw
def test_lfw_protocols_read_the_official_files(lfw_root):
    view1 = protocol_set(EvalConfig(protocol="lfw-view1", data=str(lfw_root)))
    assert len(view1.pairs) == 1000 and view1.folds is None and len(view1.records) == 3708
    dev_test = {r.identity for r in view1.records}
    assert {p.path1.parent.name for p in view1.pairs} <= dev_test
    view2 = protocol_set(EvalConfig(protocol="lfw-view2", data=str(lfw_root), identification=False))
    assert len(view2.pairs) == 6000 and np.bincount(view2.folds).tolist() == [600] * 10 and not view2.records


def test_cli_prints_json_metrics_and_errors_in_one_line(tmp_path, monkeypatch, capsys):
    from facerec.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "evaluate",
            "--model",
            "resnet18",
            "--pretrained",
            "none",
            "--input-size",
            "32",
            "--no-crop",
            "--set",
            "holdout=0.2",
            "--set",
            "n_pairs=40",
            "--set",
            "identification=false",
            "--no-track",
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["protocol"] == "folder" and 0 <= payload["metrics"]["accuracy"] <= 1 and payload["cmc"] is None
    assert payload["model"]["label"] == "resnet18@32px"

    for argv, message in [
        (["--protocol", "lfw-view1", "--data", str(tmp_path / "nope")], "is not a directory"),
        (["--set", "n_pairz=3"], "unknown config key 'n_pairz'"),
        (["--model", str(tmp_path)], "not a facerec model directory"),
        (["--data", str(tmp_path)], "no images found"),
    ]:
        code = main(
            [
                "evaluate",
                "--model",
                "resnet18",
                "--input-size",
                "32",
                "--pretrained",
                "none",
                "--no-crop",
                "--no-track",
                *argv,
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
