"""Metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.evaluation import metrics as M


def test_perfect_separation():
    scores = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    out = M.verification_metrics(scores, labels, folds=[0, 1, 2, 0, 1, 2])
    assert out["accuracy"] == 1.0 and out["accuracy_std"] == 0.0
    assert out["auc"] == 1.0
    assert out["eer"] == 0.0
    assert out["tar_far_1e-2"] == 1.0
    assert out["confusion"] == [[3, 0], [0, 3]]
    assert 0.3 < M.best_threshold(scores, labels) < 0.7


def test_inverted_scores_are_worst_case():
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    labels = [1, 1, 1, 0, 0, 0]
    assert M.roc_auc(scores, labels) == 0.0
    assert M.equal_error_rate(scores, labels)[0] == pytest.approx(1.0)
    assert M.tar_at_far(scores, labels, 1e-2) == 0.0


def test_known_eer_and_tar():
    # positives 0.9, 0.8, 0.4, 0.35 ; negatives 0.6, 0.3, 0.2, 0.1
    # At threshold 0.6: FAR = 1/4, FRR = 2/4; at 0.4: FAR 1/4, FRR 1/4 -> EER 0.25.
    scores = [0.9, 0.8, 0.4, 0.35, 0.6, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    eer, threshold = M.equal_error_rate(scores, labels)
    assert eer == pytest.approx(0.25)
    assert 0.35 <= threshold <= 0.6
    assert M.tar_at_far(scores, labels, 0.0) == pytest.approx(0.5)  # 0.9, 0.8 accepted above 0.6
    assert M.tar_at_far(scores, labels, 0.25) == pytest.approx(1.0)
    assert M.roc_auc(scores, labels) == pytest.approx(14 / 16)  # 14 of 16 pos/neg orderings right


def test_best_threshold_maximises_accuracy():
    scores = [0.9, 0.8, 0.4, 0.35, 0.6, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    t = M.best_threshold(scores, labels)
    assert M.accuracy_at(scores, labels, t) == pytest.approx(7 / 8)
    assert 0.3 < t <= 0.35  # accept the four positives, reject all negatives but 0.6


def test_fold_threshold_comes_from_other_folds():
    # Fold 0 alone would pick a threshold near 0.5; folds 1-2 push it to ~0.85,
    # so fold 0's positive at 0.6 is rejected: fold accuracy is judged out of sample.
    scores = np.array([0.6, 0.4, 0.9, 0.8, 0.95, 0.85])
    labels = np.array([1, 0, 1, 0, 1, 0])
    folds = np.array([0, 0, 1, 1, 2, 2])
    mean, std, thresholds, predictions = M.kfold_accuracy(scores, labels, folds)
    assert thresholds[0] > 0.8
    assert predictions[0] == False  # noqa: E712 - fold 0's positive is missed
    assert mean == pytest.approx(np.mean([0.5, 1.0, 1.0]))
    assert std > 0


def test_random_scores_are_near_chance():
    rng = np.random.default_rng(0)
    scores = rng.random(4000)
    labels = rng.random(4000) < 0.5
    out = M.verification_metrics(scores, labels)
    assert abs(out["auc"] - 0.5) < 0.05
    assert abs(out["eer"] - 0.5) < 0.05
    assert out["accuracy"] < 0.56


def test_one_class_is_rejected():
    with pytest.raises(ValueError, match="both"):
        M.verification_metrics([0.1, 0.2], [1, 1])


def test_cmc_and_rank_accuracy():
    probes = ["a", "b", "c", "d"]
    ranked = [["a", "x", "y"], ["x", "b", "y"], ["x", "y", "c"], ["x", "y", "z"]]
    cmc = M.cmc_curve(probes, ranked)
    np.testing.assert_allclose(cmc, [0.25, 0.5, 0.75])
    out = M.identification_metrics(probes, ranked, np.ones((4, 3)))
    assert out["rank1"] == 0.25 and out["rank5"] == 0.75


def test_open_set_rates():
    # 10 distractors with best scores 0.0..0.9; FAR 0.1 lets at most one through: threshold just above 0.8.
    unknown = np.arange(10) / 10
    known = np.array([0.95, 0.85, 0.5, 0.99])
    correct = np.array([True, True, True, False])
    rates = M.open_set_rates(known, correct, unknown, far=0.1)
    assert 0.8 < rates["threshold"] <= 0.85
    assert rates["far"] == pytest.approx(0.1)
    assert rates["dir"] == pytest.approx(0.5)  # 0.95 and 0.85 correct and accepted


def test_identification_macro_scores_and_open_set_keys():
    probes = ["a", "a", "b", "b"]
    ranked = np.array([["a", "b"], ["b", "a"], ["b", "a"], ["b", "a"]])
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.9, 0.2], [0.6, 0.5]])
    out = M.identification_metrics(probes, ranked, scores, distractor_scores=[0.3, 0.2], far=0.5)
    # rank-1 decisions: a, b, b, b -> precision a=1, b=2/3; recall a=1/2, b=1
    assert out["macro_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["macro_recall"] == pytest.approx(0.75)
    assert "dir_far_5e-1" in out and out["n_distractors"] == 2
