"""fVLM on CT-RATE's labels: each label scored through its anatomy, truth from the labels
table split_reports carries, intervals over patients; and the evaluate_fvlm stage alone
(no ConceptCLIP) on a stand-in model, with the headline stage after it."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tasks.evaluate import ct_rate_labels as ct
from tests.conftest import stage_params

CT_RATE_LABELS = ["Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
                  "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
                  "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
                  "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
                  "Interlobular septal thickening"]
PROMPTS = {"positive": "{finding} in the {anatomy}.", "negative": "{anatomy} shows no significant abnormality."}
SINGLE_PROMPT_PAIR = "[{positive: '{finding} in the {anatomy}.', negative: '{anatomy} shows no significant abnormality.'}]"


def _default_mapping() -> dict[str, list[str]]:
    from tasks.schema.training import EvaluateParams

    return EvaluateParams().ct_rate_label_anatomies


def _write_labels(path, rows: list[dict]) -> None:
    """As split_reports writes them: study_id, one int8 per label, then bookkeeping columns."""
    schema = pa.schema([("study_id", pa.string())] + [(label, pa.int8()) for label in CT_RATE_LABELS]
                       + [("n_abnormal", pa.int32()), ("source", pa.string()), ("stage", pa.string())])
    full = [{"study_id": r["study_id"], **{label: int(r.get(label, 0)) for label in CT_RATE_LABELS},
             "n_abnormal": 0, "source": "labels.csv", "stage": "split_reports"} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path)


def _table(tmp_path, rows) -> ct.LabelTable:
    path = tmp_path / "reference_labels.parquet"
    _write_labels(path, rows)
    return ct.read_label_table({"label_source": "reference", "reference_labels": str(path),
                                "report_labels": str(tmp_path / "none.parquet")})


def test_default_mapping_is_the_released_fvlm_evaluation():
    mapping = _default_mapping()
    assert list(mapping) == ["lung", "heart", "esophagus", "aorta"]
    assert len(mapping["lung"]) == 11 and "Lung nodule" in mapping["lung"] and "Pleural effusion" in mapping["lung"]
    assert mapping["heart"] == ["Cardiomegaly", "Pericardial effusion", "Coronary artery wall calcification"]
    assert mapping["esophagus"] == ["Hiatal hernia"] and mapping["aorta"] == ["Arterial wall calcification"]
    mapped = [label for labels in mapping.values() for label in labels]
    assert sorted(set(CT_RATE_LABELS) - set(mapped)) == ["Lymphadenopathy", "Medical material"]
    prompts = ct.label_prompts(mapping, PROMPTS)
    assert len(prompts) == 16
    assert prompts[0] == ct.LabelPrompt("Emphysema", "lung", "emphysema in the lung.",
                                        "lung shows no significant abnormality.")


def test_per_label_auc_through_its_anatomy_with_patient_intervals_and_reasons():
    rng = np.random.default_rng(0)
    n = 60
    patients = [f"pt-{i // 2:02d}" for i in range(n)]  # two studies each
    prompts = ct.label_prompts({"lung": ["Lung nodule", "Emphysema"], "heart": ["Cardiomegaly"],
                                "esophagus": ["Hiatal hernia"], "aorta": ["Arterial wall calcification"]}, PROMPTS)
    truth = rng.integers(0, 2, (n, 5))
    truth[:, 4] = 0
    truth[:2, 4] = 1                        # aorta: 2 positives < min_positives 3
    truth[50:] = -1                         # ten studies without a label row
    usable = np.ones((n, 5), dtype=bool)
    usable[:10, 0:2] = False                # lung cut in ten studies
    usable[:, 3] = False                    # no usable oesophagus anywhere
    scores = np.where(truth > 0, 0.7, 0.3) + rng.normal(0, 0.25, (n, 5))
    out = ct.score_labels(prompts, scores, usable, truth, patients, CT_RATE_LABELS, 3, 200, 0)

    scored = out["ct_rate_labels"]
    assert list(scored) == ["Lung nodule", "Emphysema", "Cardiomegaly"]
    for j, label in enumerate(scored):
        rows = usable[:, j] & (truth[:, j] >= 0)
        entry = scored[label]
        assert entry["auc"] == pytest.approx(roc_auc_score(truth[rows, j], scores[rows, j]))
        assert entry["n"] == int(rows.sum()) and entry["positives"] == int(truth[rows, j].sum())
        assert entry["patients"] == len({p for p, ok in zip(patients, rows) if ok})
        assert entry["ci"][0] <= entry["auc"] <= entry["ci"][1]
        assert entry["anatomy"] == ("heart" if label == "Cardiomegaly" else "lung")
    assert scored["Lung nodule"]["n"] == 40  # 60 - 10 cut - 10 without a row

    skipped = out["ct_rate_labels_not_scored"]
    assert skipped["Hiatal hernia"]["reason"] == "no_studies" and skipped["Hiatal hernia"]["anatomy"] == "esophagus"
    assert skipped["Arterial wall calcification"]["reason"] == "too_few_positives"
    assert "evaluate.min_positives is 3" in skipped["Arterial wall calcification"]["detail"]
    assert skipped["Medical material"] == {"anatomy": None, "reason": "not_mapped",
                                           "detail": "no anatomy in evaluate.ct_rate_label_anatomies lists it"}
    assert set(skipped) | set(scored) == set(CT_RATE_LABELS)

    macro = out["ct_rate_macro_auc"]
    assert macro["value"] == pytest.approx(np.mean([e["auc"] for e in scored.values()]))
    assert macro["ci95"][0] <= macro["value"] <= macro["ci95"][1] and macro["groups"] == 30


def test_a_label_positive_everywhere_is_not_scored():
    prompts = ct.label_prompts({"lung": ["Lung nodule"]}, PROMPTS)
    out = ct.score_labels(prompts, np.random.default_rng(1).random((8, 1)), np.ones((8, 1), bool),
                          np.ones((8, 1), int), [f"p{i}" for i in range(8)], ["Lung nodule"], 3, 50, 0)
    assert out["ct_rate_labels"] == {} and out["ct_rate_macro_auc"] is None
    assert out["ct_rate_labels_not_scored"]["Lung nodule"]["reason"] == "no_negatives"


@pytest.mark.parametrize("mapping, key, words", [
    ({"lungs": ["Emphysema"]}, "evaluate.ct_rate_label_anatomies.lungs", ["unknown anatomy 'lungs'", "'lung'"]),
    ({"lung": ["Lung nodules"]}, "evaluate.ct_rate_label_anatomies.lung",
     ["unknown label 'Lung nodules'", "did you mean 'Lung nodule'"]),
    ({"lung": ["Emphysema"], "heart": ["Emphysema"]}, "evaluate.ct_rate_label_anatomies",
     ["mapped to both 'lung' and 'heart'"]),
])
def test_a_wrong_mapping_names_the_key(tmp_path, mapping, key, words):
    table = _table(tmp_path, [{"study_id": "st-1"}])
    with pytest.raises(ValueError) as error:
        ct.check_label_anatomies(mapping, ["lung", "heart", "aorta"], table)
    message = str(error.value)
    assert message.startswith(key) and all(w in message for w in words), message


def test_the_mapping_param_is_typed():
    from tasks.common.params import ParamsError, load_params
    from tasks.schema import validate_params
    from tests.conftest import REPO_ROOT

    params = load_params(REPO_ROOT / "params.yaml", [])
    params["evaluate"]["ct_rate_label_anatomies"] = {"lung": "Emphysema"}
    with pytest.raises(ParamsError, match="evaluate.ct_rate_label_anatomies.lung"):
        validate_params(params)
    params["evaluate"]["ct_rate_label_anatomies"] = _default_mapping()
    params["evaluate"]["label_source"] = "predicted"
    with pytest.raises(ParamsError, match="evaluate.label_source"):
        validate_params(params)


def test_truth_joins_report_keys_to_volumes_through_the_study_key_map(tmp_path):
    from tasks.training.fvlm_data import study_key_map

    studies = [{"study_id": "st-a", "accession_id": "ac-a"}, {"study_id": "st-b", "accession_id": "ac-b"},
               {"study_id": "st-c", "accession_id": None}]
    table = _table(tmp_path, [{"study_id": "st-a", "Lung nodule": 1},
                              {"study_id": "st-a", "Emphysema": 1},          # a second reconstruction's row
                              {"study_id": "ac-b", "Cardiomegaly": 1},       # keyed by accession
                              {"study_id": "st-zz", "Lung nodule": 1}])      # no such volume
    labels = ["Lung nodule", "Emphysema", "Cardiomegaly"]
    truth, has_row, matched = ct.truth_matrix(["st-a", "st-b", "st-c"], table, study_key_map(studies), labels)
    assert truth.tolist() == [[1, 1, 0], [0, 0, 1], [-1, -1, -1]]
    assert has_row.tolist() == [True, True, False] and matched == 2

    elsewhere = _table(tmp_path, [{"study_id": "ac-x"}, {"study_id": "ac-y"}])
    _, _, matched = ct.truth_matrix(["st-a"], elsewhere, study_key_map(studies), labels)
    assert matched == 0
    message = ct.no_match_message(elsewhere, studies)
    assert "2 accession" in message and "3 study" in message and "split_reports.study_key_kind" in message


def test_label_source_picks_the_table_and_a_missing_one_names_its_key(tmp_path):
    derived = tmp_path / "report_labels.parquet"
    _write_labels(derived, [{"study_id": "st-1", "Atelectasis": 1}])
    params = {"label_source": "derived", "report_labels": str(derived),
              "reference_labels": str(tmp_path / "reference_labels.parquet")}
    table = ct.read_label_table(params)
    assert table.source == "derived" and table.labels == CT_RATE_LABELS
    assert table.rows["st-1"]["Atelectasis"] == 1 and table.rows["st-1"]["Emphysema"] == 0
    with pytest.raises(FileNotFoundError, match="evaluate.reference_labels: .* not found.*label_source=derived"):
        ct.read_label_table({**params, "label_source": "reference"})


def test_the_card_names_the_mapping_the_label_source_and_each_label():
    from collections import Counter

    from tasks.evaluate.cards import ct_rate_section, model_card

    per_label = {"Lung nodule": {"anatomy": "lung", "auc": 0.8, "ci": [0.7, 0.9], "positives": 5, "n": 24},
                 "Cardiomegaly": {"anatomy": "heart", "auc": 0.75, "ci": None, "positives": 3, "n": 20}}
    skipped = {"Medical material": {"anatomy": None, "reason": "not_mapped", "detail": "no anatomy lists it"}}
    section = ct_rate_section({"lung": ["Lung nodule"], "heart": ["Cardiomegaly"]}, "reference",
                              "data/split_reports/reference_labels.parquet", per_label, skipped,
                              {"value": 0.775, "ci95": [0.6, 0.9]}, "bootstrap over patients")
    card = model_card("fVLM", "use", ["limit"], ["- data"], Counter(), {}, [], "data/train_fvlm/model.safetensors",
                      "../../lineage.json", section)
    assert "- lung: Lung nodule" in card and "- heart: Cardiomegaly" in card
    assert "Label source: reference" in card and "`data/split_reports/reference_labels.parquet`" in card
    assert "| Lung nodule | lung | 0.800 | [0.700, 0.900] | 5 / 24 |" in card
    assert "| Cardiomegaly | heart | 0.750 | n/a | 3 / 20 |" in card
    assert "| **macro (2 labels)** | | 0.775 | [0.600, 0.900] | |" in card
    assert "- Medical material: not_mapped (no anatomy lists it)" in card
    assert card.index("## CT-RATE labels") < card.index("## Lineage")
    derived = "\n".join(ct_rate_section({}, "derived", "data/split_reports/report_labels.parquet", {}, {}, None, "x"))
    assert "Label source: derived" in derived and "derives from the report text" in derived


# -- the evaluate_fvlm stage alone, on a stand-in model -------------------------------------------
ANATOMIES = ["lung", "heart", "esophagus", "aorta"]
GRID = (4, 8, 8)


class _Tokenizer:
    vocab_size = 10

    def encode(self, texts):
        ids = torch.tensor([[2, 5 + len(t) % 3, 3] for t in texts], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class _Model:
    """Each prompt's score: the mean intensity inside its anatomy's mask (bright = abnormal)."""

    def zero_shot_scores(self, volumes, masks, pos_ids, pos_mask, neg_ids, neg_mask, anatomy_index):
        m = masks[:, anatomy_index].float()                             # [B, T, D, H, W]
        inside = (volumes[:, :1] * m).flatten(2).sum(-1) / m.flatten(2).sum(-1).clamp(min=1)
        return torch.sigmoid(inside * 4)


@pytest.fixture(scope="module")
def ct_study_inputs(tmp_path_factory):
    """24 test studies of 12 patients: the lung is bright when it holds a nodule, the heart
    when enlarged; the labels table marks them (half keyed by accession), one study has no row."""
    from tasks.training.fvlm_data import StudyRecord
    from tasks.training.fvlm_tensors import write_study_tensors
    from tasks.training.splits import TEST

    root = tmp_path_factory.mktemp("ct_rate_eval")
    (root / "tensors").mkdir()
    rng = np.random.default_rng(5)
    records, studies, labels, texts = [], [], [], []
    for i in range(24):
        nodule, big_heart = bool(i % 2), bool((i // 2) % 2)
        masks = np.zeros((len(ANATOMIES), *GRID), dtype=bool)
        masks[0, :, :4, :4] = masks[1, :, 4:, 4:] = masks[2, :, :2, 6:] = masks[3, :, 6:, :2] = True
        volume = rng.normal(-0.5, 0.05, (1, *GRID))
        volume[0][masks[0]] += 0.6 if nodule else 0.0
        volume[0][masks[1]] += 0.6 if big_heart else 0.0
        path = root / "tensors" / f"se-{i:02d}.zip"
        write_study_tensors(path, volume.astype(np.float16), masks)
        sid, patient = f"st-{i:02d}", f"pt-{i // 2:02d}"
        lung_text = {"description": "Lung nodule." if nodule else "Lung shows no significant abnormality.",
                     "normal": not nodule, "findings": ["lung_nodule"] if nodule else []}
        records.append(StudyRecord(study_id=sid, patient_id=patient, series_id=f"se-{i:02d}", tensors=path,
                                   mask_index={a: k for k, a in enumerate(ANATOMIES)},
                                   usable={"lung": True, "heart": True, "esophagus": True, "aorta": i != 3},
                                   texts={"lung": lung_text}, split=TEST))
        studies.append({"patient_id": patient, "study_id": sid, "series_id": f"se-{i:02d}",
                        "accession_id": f"ac-{i:02d}"})
        texts.append({"study_id": sid, "anatomy": "lung", "description": lung_text["description"],
                      "finding_keys": lung_text["findings"], "finding_names": ["Lung nodule"] if nodule else []})
        if i != 23:
            labels.append({"study_id": sid if i % 2 else f"ac-{i:02d}", "Lung nodule": int(nodule),
                           "Cardiomegaly": int(big_heart), "Emphysema": int(i % 4 == 0),
                           "Hiatal hernia": int(i in (1, 2)), "Medical material": 1})
    # what fvlm_prepare records beside the tensors (the model's grid, windows, anatomies)
    (root / "prepared").mkdir()
    (root / "prepared" / "prepared.json").write_text(json.dumps(
        {"grid": list(GRID), "hu_windows": [[-1000.0, 1000.0]], "anatomies": ANATOMIES}))
    pq.write_table(pa.Table.from_pylist([{"series_id": r.series_id, "study_id": r.study_id, "tensors": str(r.tensors)}
                                         for r in records]), root / "prepared" / "tensors.parquet")
    pq.write_table(pa.Table.from_pylist(studies), root / "studies.parquet")
    pq.write_table(pa.Table.from_pylist(texts), root / "anatomy_texts.parquet")
    _write_labels(root / "reference_labels.parquet", labels)
    _write_labels(root / "report_labels.parquet", labels)
    (root / "train").mkdir()
    (root / "train" / "config.json").write_text(json.dumps({"model": {"anatomies": ANATOMIES}}))
    return root, records


@pytest.fixture()
def stand_in_model(monkeypatch, ct_study_inputs):
    from tasks.evaluate import fvlm_eval

    _, records = ct_study_inputs
    config = {"model": {"anatomies": ANATOMIES, "ct": {"volume_size": list(GRID)}},
              "preprocess": {"hu_windows": [[-1000.0, 1000.0]]}}
    monkeypatch.setattr(fvlm_eval, "load_trained", lambda train_dir: (_Model(), _Tokenizer(), config))
    monkeypatch.setattr(fvlm_eval, "load_records", lambda section, anatomies: (list(records), []))


def _params(repo_root, root, out, **extra):
    return stage_params(repo_root, **{
        "evaluate.output_dir": out, "evaluate.reference_labels": root / "reference_labels.parquet",
        "evaluate.report_labels": root / "report_labels.parquet", "evaluate.min_positives": 2,
        "evaluate.bootstrap.n": 50, "evaluate.models": "[fvlm]",
        "train_fvlm.studies": root / "studies.parquet", "train_fvlm.anatomy_texts": root / "anatomy_texts.parquet",
        "train_fvlm.output_dir": root / "train", "train_fvlm.prepared": root / "prepared",
        # the fixture's studies are all on the test side: one prompt pair, nothing to tune
        "evaluate.fvlm_tuning.prompts": SINGLE_PROMPT_PAIR, **extra})


def test_a_wrong_mapping_fails_before_any_volume_is_read(stand_in_model, ct_study_inputs, repo_root, tmp_path):
    from tasks.evaluate import fvlm_eval
    from tasks.schema import resolve_training_preset

    root, _ = ct_study_inputs
    params = _params(repo_root, root, tmp_path / "evaluate",
                     **{"evaluate.ct_rate_label_anatomies": "{lung: [Lung nodule], liver: [Cardiomegaly]}"})
    with pytest.raises(ValueError, match=r"evaluate.ct_rate_label_anatomies.liver: unknown anatomy 'liver'"):
        fvlm_eval.evaluate(root / "train", resolve_training_preset(params["train_fvlm"]), params["evaluate"])


def test_evaluate_fvlm_runs_alone_and_the_headline_keeps_its_folder(stand_in_model, ct_study_inputs, repo_root,
                                                                     tmp_path):
    from flows.evaluate import evaluate_flow
    from flows.evaluate_fvlm import evaluate_fvlm_flow
    from flows.evaluate_runner import run_evaluate_stage
    from tasks.evaluate.stage import read_model

    root, _ = ct_study_inputs
    out = tmp_path / "evaluate"
    params = _params(repo_root, root, out)
    run_evaluate_stage(evaluate_fvlm_flow, params, "fvlm")

    folder = out / "fvlm"
    detail = json.loads((folder / "metrics_detail.json").read_text())
    labels = detail["ct_rate_labels"]
    assert labels["Lung nodule"]["auc"] == 1.0 and labels["Cardiomegaly"]["auc"] == 1.0
    assert labels["Lung nodule"] == {**labels["Lung nodule"], "anatomy": "lung", "n": 23, "positives": 11,
                                     "patients": 12}
    assert labels["Lung nodule"]["ci"] is not None
    skipped = detail["ct_rate_labels_not_scored"]
    assert skipped["Medical material"]["reason"] == skipped["Lymphadenopathy"]["reason"] == "not_mapped"
    assert skipped["Arterial wall calcification"]["reason"] == "too_few_positives"
    assert labels["Hiatal hernia"]["anatomy"] == "esophagus" and labels["Hiatal hernia"]["positives"] == 2
    assert detail["ct_rate_label_source"] == {"source": "reference", "table": str(root / "reference_labels.parquet"),
                                              "test_studies_with_labels": 23}
    assert detail["zero_shot_auc"] == {"lung_nodule @ lung": 1.0} and detail["test_patients"] == 12
    assert detail["zero_shot_macro_auc"]["groups"] == 12
    card = (folder / "model_cards" / "fvlm.md").read_text()
    assert "- lung: Emphysema, Atelectasis, Lung nodule" in card and "- esophagus: Hiatal hernia" in card
    assert "Label source: reference" in card and "reference_labels.parquet" in card
    assert "| Lung nodule | lung | 1.000 |" in card and "bootstrap over test patients" in card
    assert (folder / "roc" / "roc_fvlm.csv").read_text().startswith("fpr,tpr")
    assert (folder / "plots" / "roc_fvlm_ct_rate.png").is_file() and len(list((folder / "galleries").glob("*.png"))) == 4
    assert json.loads((folder / "summary.json").read_text())["items_out"] == 1

    run_evaluate_stage(evaluate_flow, params, None)
    headline = json.loads((out / "metrics.json").read_text())
    assert list(headline) == ["fvlm"] and headline["fvlm"]["n_ct_rate_labels"] == len(labels)
    assert headline["fvlm"]["ct_rate_macro_auc"] == detail["ct_rate_macro_auc"]["value"]
    assert json.loads((out / "metrics_detail.json").read_text()) == {"fvlm": detail}
    assert (out / "lineage.json").is_file()
    # the headline's swap carried the model's folder over untouched
    assert json.loads((folder / "metrics_detail.json").read_text()) == detail and (folder / "model_cards").is_dir()

    cfg = {**params["evaluate"], "models_dir": str(out)}
    with pytest.raises(FileNotFoundError, match="run `python -m flows.evaluate_conceptclip`"):
        read_model("conceptclip", cfg, str(out))


# -- prompts tuned on validation, test scored once ------------------------------------------------
class _TextTokenizer:
    """Keeps each text under its id, so a stand-in model can read its prompts back."""
    vocab_size = 10

    def __init__(self):
        self.texts: list[str] = []

    def encode(self, texts):
        ids = []
        for t in texts:
            self.texts.append(t)
            ids.append([len(self.texts) - 1])
        ids = torch.tensor(ids, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class _PromptModel(_Model):
    """Bright is abnormal under the normal-statement negative; the "No ..." negative reads
    the other way (dark is abnormal)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def zero_shot_scores(self, volumes, masks, pos_ids, pos_mask, neg_ids, neg_mask, anatomy_index):
        bright = super().zero_shot_scores(volumes, masks, pos_ids, pos_mask, neg_ids, neg_mask, anatomy_index)
        dark = torch.tensor([self.tokenizer.texts[int(i)].startswith("No ") for i in neg_ids[:, 0]])
        return torch.where(dark[None, :], 1 - bright, bright)


def test_the_prompt_pair_is_chosen_on_validation_and_test_is_scored_with_it(monkeypatch, ct_study_inputs,
                                                                            repo_root, tmp_path):
    """On the validation studies a nodule is dark, so the "No ..." pair wins there; on test it
    is bright. The reported test AUC is that pair's (low): a choice made on test would show 1.0."""
    from tasks.evaluate import fvlm_eval
    from tasks.schema import resolve_training_preset
    from tasks.training.fvlm_data import StudyRecord
    from tasks.training.fvlm_tensors import write_study_tensors
    from tasks.training.splits import VALIDATION

    root, records = ct_study_inputs
    rng = np.random.default_rng(9)
    validation = []
    for i in range(12):
        nodule = bool(i % 2)
        masks = np.zeros((len(ANATOMIES), *GRID), dtype=bool)
        masks[0, :, :4, :4] = masks[1, :, 4:, 4:] = masks[2, :, :2, 6:] = masks[3, :, 6:, :2] = True
        volume = rng.normal(-0.5, 0.05, (1, *GRID))
        volume[0][masks[0]] -= 0.6 if nodule else 0.0
        path = tmp_path / f"val-{i:02d}.zip"
        write_study_tensors(path, volume.astype(np.float16), masks)
        text = {"description": "Lung nodule." if nodule else "Lung shows no significant abnormality.",
                "normal": not nodule, "findings": ["lung_nodule"] if nodule else []}
        validation.append(StudyRecord(study_id=f"st-v{i:02d}", patient_id=f"pt-v{i // 2:02d}",
                                      series_id=f"se-v{i:02d}", tensors=path,
                                      mask_index={a: k for k, a in enumerate(ANATOMIES)},
                                      usable={a: True for a in ANATOMIES}, texts={"lung": text}, split=VALIDATION))
    tokenizer = _TextTokenizer()
    config = {"model": {"anatomies": ANATOMIES, "ct": {"volume_size": list(GRID)}},
              "preprocess": {"hu_windows": [[-1000.0, 1000.0]]}}
    monkeypatch.setattr(fvlm_eval, "load_trained", lambda train_dir: (_PromptModel(tokenizer), tokenizer, config))
    monkeypatch.setattr(fvlm_eval, "load_records", lambda section, anatomies: (records + validation, []))
    params = _params(repo_root, root, tmp_path / "evaluate", **{"evaluate.fvlm_tuning.prompts": (
        "[{positive: '{finding} in the {anatomy}.', negative: '{anatomy} shows no significant abnormality.'}, "
        "{positive: '{finding} in the {anatomy}.', negative: 'No {finding} in the {anatomy}.'}]")})
    ev = fvlm_eval.evaluate(root / "train", resolve_training_preset(params["train_fvlm"]), params["evaluate"])

    tuning = ev.metrics["tuning"]
    assert [c["validation_macro_auc"] for c in tuning["candidates"]] == [0.0, 1.0]
    assert tuning["chosen"]["negative"] == "No {finding} in the {anatomy}." == ev.metrics["prompts"]["negative"]
    assert (tuning["validation_units"], tuning["validation_items"]) == (6, 12)
    assert ev.metrics["zero_shot_auc"] == {"lung_nodule @ lung": 0.0}
    assert {r.study_id for r in ev.records} == {r.study_id for r in records}  # only test studies are reported
    assert ev.metrics["split"]["counts"]["test"] == {"items": 24, "units": 12}
    # the aorta is unusable in one test study: its cells are left out and counted
    assert ev.metrics["anatomy_exclusions"]["aorta"] == {"usable": 23, "absent": 0, "fov_cut": 1}
