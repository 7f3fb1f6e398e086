"""Train / validation / test splits in params, and evaluate's choices made on validation only."""
from __future__ import annotations

import pytest

from tasks.evaluate.tuning import choose, grid


def test_split_params_refuse_the_old_key_an_empty_train_side_and_a_wrong_unit(repo_root):
    from tasks.common.params import load_params
    from tasks.training.splits import split_spec

    with pytest.raises(Exception, match="heldout_fraction is gone"):
        load_params(repo_root / "params.yaml",
                    ["train_fvlm.split={by: patient_id, heldout_fraction: 0.3, salt: s}"])
    with pytest.raises(Exception, match="nothing would be left to train on"):
        load_params(repo_root / "params.yaml",
                    ["train_conceptclip.split={by: pmcid, validation_fraction: 0.5, test_fraction: 0.5, salt: s}"])
    params = load_params(repo_root / "params.yaml", ["train_conceptclip.split.by=journal"])
    with pytest.raises(ValueError, match="split.by is 'journal', but this stage splits by 'pmcid'"):
        split_spec(params["train_conceptclip"], "pmcid")


def test_a_datasets_own_split_is_the_test_side_by_unit(repo_root):
    from tasks.common.params import load_params
    from tasks.training.splits import TEST, TRAIN, VALIDATION, split_spec

    official = ["train_fvlm.split.test_fraction=null", "train_fvlm.split.test_source_splits=[valid]"]
    params = load_params(repo_root / "params.yaml", official)
    spec = split_spec(params["train_fvlm"], "patient_id", source_splits=True)
    units = [(f"p{i}", "valid" if i % 5 == 0 else "train") for i in range(400)]
    units.append(("p1", "valid"))  # a patient with a study in each split is all test
    sides = {u: spec.with_source_splits(units).of(u) for u, _ in units}
    assert {u for u, side in sides.items() if side == TEST} == {u for u, name in units if name == "valid"}
    rest = [side for side in sides.values() if side != TEST]
    assert 0.1 < rest.count(VALIDATION) / len(rest) < 0.3 and TRAIN in rest  # validation_fraction 0.2 of the rest
    # the hash alone puts other patients on the test side
    hashed = split_spec(load_params(repo_root / "params.yaml")["train_fvlm"], "patient_id", source_splits=True)
    assert {hashed.of(u) for u, name in units if name == "train"} == {TRAIN, VALIDATION, TEST}
    with pytest.raises(ValueError, match="come from no source split"):
        spec.with_source_splits([("p1", "valid"), ("q", None)])
    with pytest.raises(Exception, match="set split.test_fraction to null"):
        load_params(repo_root / "params.yaml", official[1:])
    with pytest.raises(Exception, match="test_fraction is null: set it"):
        load_params(repo_root / "params.yaml", official[:1])
    clip = load_params(repo_root / "params.yaml", ["train_conceptclip.split.test_fraction=null",
                                                   "train_conceptclip.split.test_source_splits=[valid]"])
    with pytest.raises(ValueError, match="carry no split of their own"):
        split_spec(clip["train_conceptclip"], "pmcid")


def test_grid_lists_every_combination_with_the_first_values_first():
    combos = grid({"wording": ["surface", "preferred"], "weight": [0.0, 1.0]})
    assert combos == [{"wording": "surface", "weight": 0.0}, {"wording": "surface", "weight": 1.0},
                      {"wording": "preferred", "weight": 0.0}, {"wording": "preferred", "weight": 1.0}]


def test_choose_takes_the_best_validation_score_and_the_first_of_a_tie():
    scores = {"a": 0.7, "b": 0.9, "c": 0.9, "d": None}
    picked = choose([{"k": k} for k in "abcd"], lambda _, c: scores[c["k"]], units=6, items=30, section="x")
    assert picked.chosen == {"k": "b"}
    assert [s["validation_macro_auc"] for s in picked.scored] == [0.7, 0.9, 0.9, None]
    record = picked.record("macro AUC")
    assert record["split"] == "validation" and (record["validation_units"], record["validation_items"]) == (6, 30)


def test_one_candidate_is_taken_without_a_validation_pass_and_none_scored_is_an_error():
    def never(*_):
        raise AssertionError("a single candidate needs no scoring")

    assert choose([{"k": 1}], never, 0, 0, "x").chosen == {"k": 1}
    with pytest.raises(ValueError, match="evaluate.fvlm_tuning.prompts: 2 candidates but the validation split"):
        choose([{"k": 1}, {"k": 2}], lambda *_: None, 0, 0, "evaluate.fvlm_tuning.prompts")
