import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.evaluate.metrics import (auc_or_none, bootstrap_ci, macro_auc, macro_auc_with_ci, per_label_auc,
                                    recall_at_k, roc_points)


def test_auc_matches_sklearn_and_handles_one_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = rng.random(50)
    assert auc_or_none(y, s) == pytest.approx(roc_auc_score(y, s))
    assert auc_or_none(np.ones(5), np.arange(5)) is None


def test_macro_auc_skips_undefined_labels():
    labels = np.array([[1, 1], [0, 1], [1, 1], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.2, 0.4]])
    assert macro_auc(labels, scores) == 1.0
    assert per_label_auc(labels, scores, ["a", "b"]) == {"a": 1.0}


def test_recall_at_k_on_a_known_ranking():
    sim = np.array([[0.9, 0.1, 0.0], [0.95, 0.5, 0.1], [0.1, 0.2, 0.3]])
    r = recall_at_k(sim, ks=(1, 2))
    assert r == {"R@1": pytest.approx(2 / 3), "R@2": 1.0}


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_data():
    rng = np.random.default_rng(1)

    def make(n):
        y = rng.integers(0, 2, (n, 3))
        return y, y * 0.6 + rng.random((n, 3))

    small = macro_auc_with_ci(*make(40), n_boot=150, seed=0)
    large = macro_auc_with_ci(*make(800), n_boot=150, seed=0)
    for result in (small, large):
        low, high = result["ci95"]
        assert low <= result["value"] <= high
    assert (large["ci95"][1] - large["ci95"][0]) < (small["ci95"][1] - small["ci95"][0])


def test_bootstrap_returns_none_when_statistic_is_always_undefined():
    assert bootstrap_ci(lambda idx: None, 10, n_boot=50) is None


def test_roc_points_start_and_end_at_corners():
    pts = roc_points(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.6]))
    assert pts[0] == {"fpr": 0.0, "tpr": 0.0} and pts[-1] == {"fpr": 1.0, "tpr": 1.0}


def test_vectorised_column_aucs_match_sklearn_with_ties():
    from tasks.evaluate.metrics import column_aucs

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (60, 5))
    scores = np.round(rng.random((60, 5)), 1)  # many ties
    expected = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(5)]
    assert np.allclose(column_aucs(labels, scores), expected)
    assert np.isnan(column_aucs(np.ones((4, 1)), np.arange(4.0)[:, None]))[0]


def test_study_gallery_takes_multi_window_volumes(tmp_path):
    import numpy as np

    from tasks.evaluate.plots import study_png

    volume = np.random.default_rng(0).uniform(-1, 1, (3, 8, 12, 12)).astype("float32")  # three HU windows
    masks = np.zeros((2, 8, 12, 12), bool)
    masks[0, 2:6, 3:9, 3:9] = True
    study_png(volume, masks, ["liver", "kidney"], ["liver mass 0.91"], "study", tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
