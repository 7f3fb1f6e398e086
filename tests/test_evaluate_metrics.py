import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.evaluate.metrics import (auc_metrics, auc_or_none, bootstrap_ci, macro_auc, macro_auc_with_ci,
                                    per_label_auc, recall_at_k)


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

    small = macro_auc_with_ci(*make(40), np.arange(40), n_boot=150, seed=0)
    large = macro_auc_with_ci(*make(800), np.arange(800), n_boot=150, seed=0)
    for result in (small, large):
        low, high = result["ci95"]
        assert low <= result["value"] <= high
    assert (large["ci95"][1] - large["ci95"][0]) < (small["ci95"][1] - small["ci95"][0])


def test_bootstrap_returns_none_when_statistic_is_always_undefined():
    assert bootstrap_ci(lambda idx: None, np.arange(10), n_boot=50) is None


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


def _conceptclip_detail():
    return {"test_figures": 30, "test_articles": 9, "concepts_evaluated": 4,
            "zero_shot_macro_auc": {"value": 0.91, "ci95": [0.84, 0.96], "n": 30},
            "zero_shot_auc": {"CT (C0040405)": 0.93, "MRI (C0024485)": 0.88},
            "annotation_macro_auc": {"value": 0.7, "ci95": [0.6, 0.8], "n": 30}, "annotation_auc": {},
            "retrieval": {"image_to_text_R@1": {"value": 0.4, "ci95": [0.2, 0.6]},
                          "text_to_image_R@1": {"value": 0.3, "ci95": [0.1, 0.5]}}}


def test_headline_keeps_flat_model_figures_and_leaves_per_label_detail_out():
    from tasks.evaluate.headline import headline

    fvlm = {"test_studies": 24, "test_patients": 20, "pairs_evaluated": 7,
            "zero_shot_macro_auc": {"value": 0.88, "ci95": None, "n": 24}, "zero_shot_auc": {"cyst @ liver": 0.9},
            "ct_rate_macro_auc": {"value": 0.8, "ci95": [0.7, 0.9], "n": 24},
            "ct_rate_labels": {"Lung nodule": {"anatomy": "lung", "auc": 0.8, "ci": [0.7, 0.9], "positives": 5, "n": 24}}}
    figures = headline({"fvlm": fvlm, "conceptclip": _conceptclip_detail()})
    assert figures["conceptclip"] == {
        "macro_auc": 0.91, "macro_auc_ci_low": 0.84, "macro_auc_ci_high": 0.96,
        "n_figures": 30, "n_articles": 9, "n_concepts": 4, "i2t_R@1": 0.4, "t2i_R@1": 0.3}
    assert figures["fvlm"] == {"macro_auc": 0.88, "macro_auc_ci_low": None, "macro_auc_ci_high": None,
                               "n_studies": 24, "n_patients": 20, "n_pairs": 7, "ct_rate_macro_auc": 0.8,
                               "ct_rate_macro_auc_ci_low": 0.7, "ct_rate_macro_auc_ci_high": 0.9,
                               "n_ct_rate_labels": 1}
    unscored = headline({"fvlm": {**fvlm, "ct_rate_macro_auc": None, "ct_rate_labels": {}}})["fvlm"]
    assert "ct_rate_macro_auc" not in unscored and unscored["n_ct_rate_labels"] == 0
    with pytest.raises(ValueError, match="no headline figures defined for model"):
        headline({"other": {}})


def test_model_card_carries_no_code_version_and_points_to_the_lineage_record():
    from collections import Counter

    from tasks.evaluate.cards import model_card

    m = _conceptclip_detail()
    card = model_card("T", "use", ["limit"], ["- data"], Counter({"CC BY": 3}), {"metrics": {"steps": 5}},
                      [("zero-shot macro AUC", m["zero_shot_macro_auc"])], "data/train_x/model.safetensors",
                      "data/evaluate/lineage.json", [])
    assert "| zero-shot macro AUC | 0.910 | [0.840, 0.960] |" in card
    assert "`data/evaluate/lineage.json`" in card and "python -m flows.lineage data/train_x/model.safetensors" in card
    assert "Code:" not in card and "commit" not in card.lower()


def test_auc_metrics_names_both_entries_and_is_empty_without_labels():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, (40, 3))
    scores = labels + rng.normal(0, 0.8, (40, 3))
    names = ["a", "b", "c"]
    groups = np.arange(40) // 4
    out = auc_metrics("zero_shot", labels, scores, names, groups, n_boot=50, seed=1)
    assert list(out) == ["zero_shot_macro_auc", "zero_shot_auc", "zero_shot_support"]
    assert out["zero_shot_macro_auc"] == macro_auc_with_ci(labels, scores, groups, 50, 1)
    assert out["zero_shot_macro_auc"]["groups"] == 10 and out["zero_shot_macro_auc"]["columns"] == 3
    assert out["zero_shot_auc"] == per_label_auc(labels, scores, names) and set(out["zero_shot_auc"]) == set(names)
    assert out["zero_shot_support"]["b"] == {"items": 40, "positives": int(labels[:, 1].sum()), "units": 10}
    empty = auc_metrics("annotation", np.zeros((40, 0), int), np.zeros((40, 0)), [], groups, n_boot=50, seed=1)
    assert empty == {"annotation_macro_auc": None, "annotation_auc": {}, "annotation_support": {}}


def test_support_counts_only_the_cells_with_truth():
    from tasks.evaluate.metrics import column_support

    labels = np.array([[1, 1], [0, 1], [1, 0], [0, 0]])
    valid = np.array([[True, False], [True, True], [False, True], [True, True]])
    groups = ["p1", "p1", "p2", "p3"]
    assert column_support(labels, groups, valid) == [{"items": 3, "positives": 1, "units": 2},
                                                     {"items": 3, "positives": 1, "units": 3}]


def test_valid_cells_leave_their_column_as_if_the_rows_were_absent():
    from tasks.evaluate.metrics import column_aucs

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, (50, 3))
    scores = np.round(rng.random((50, 3)), 1)
    valid = rng.random((50, 3)) < 0.7
    expected = [roc_auc_score(labels[valid[:, j], j], scores[valid[:, j], j]) for j in range(3)]
    assert np.allclose(column_aucs(labels, scores, valid), expected)
    # an excluded cell with a label and an extreme score changes nothing
    labels[~valid], scores[~valid] = 1, -5.0
    assert np.allclose(column_aucs(labels, scores, valid), expected)
    assert per_label_auc(labels, scores, ["a", "b", "c"], valid) == pytest.approx(dict(zip("abc", expected)))


def test_one_group_per_row_is_the_plain_bootstrap():
    from tasks.evaluate.metrics import resampled_rows

    rng = np.random.default_rng(0)
    plain = [rng.integers(0, 12, size=12) for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(plain, resampled_rows(np.arange(12), 5, 0)))


def test_grouped_resamples_take_every_row_of_a_drawn_group():
    from tasks.evaluate.metrics import resampled_rows

    groups = np.array(["p2", "p1", "p2", "p3", "p1", "p2"])
    for rows in resampled_rows(groups, 20, 3):
        drawn = groups[rows]
        for g in set(drawn):
            # a group comes with all its rows, as many times as it was drawn
            assert list(drawn).count(g) % list(groups).count(g) == 0
        assert len(rows) == sum(list(groups).count(g) * (list(drawn).count(g) // list(groups).count(g))
                                for g in set(drawn))


def test_duplicated_studies_of_one_patient_shrink_the_naive_interval_not_the_patient_one():
    """Copying each patient's study five times adds no information: resampling studies one by
    one then narrows the interval about sqrt(5)-fold; resampling patients leaves it as it was."""
    rng = np.random.default_rng(11)
    n = 60
    labels = rng.integers(0, 2, (n, 2))
    scores = labels * 0.5 + rng.random((n, 2))
    patients = np.arange(n)

    def width(result):
        return result["ci95"][1] - result["ci95"][0]

    base = macro_auc_with_ci(labels, scores, patients, n_boot=400, seed=0)
    copies = 5
    dup_labels, dup_scores = np.repeat(labels, copies, axis=0), np.repeat(scores, copies, axis=0)
    dup_patients = np.repeat(patients, copies)
    naive = macro_auc_with_ci(dup_labels, dup_scores, np.arange(n * copies), n_boot=400, seed=0)
    grouped = macro_auc_with_ci(dup_labels, dup_scores, dup_patients, n_boot=400, seed=0)
    assert grouped["value"] == pytest.approx(base["value"]) == pytest.approx(naive["value"])
    assert width(naive) < 0.6 * width(base)
    assert width(grouped) == pytest.approx(width(base), rel=0.25)
    assert grouped["groups"] == n and naive["groups"] == n * copies


def test_per_column_intervals_bracket_their_auc_and_share_the_resamples():
    from tasks.evaluate.metrics import column_aucs_with_ci

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (80, 3))
    labels[:, 2] = 0
    labels[:2, 2] = 1  # two positives: most resamples have one or none
    scores = labels * 0.6 + rng.random((80, 3))
    groups = np.arange(80) // 2
    out = column_aucs_with_ci(labels, scores, groups, n_boot=200, seed=4)
    for entry, j in zip(out[:2], range(2)):
        assert entry["auc"] == pytest.approx(roc_auc_score(labels[:, j], scores[:, j]))
        assert entry["ci95"][0] <= entry["auc"] <= entry["ci95"][1]
    assert out[2]["auc"] is not None
    assert column_aucs_with_ci(labels, scores, groups, 200, 4) == out  # same seed, same numbers
