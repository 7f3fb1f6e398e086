"""`medconcept predict` on a CT with an fVLM folder (tasks/predict/ct_predict.py): the probability
of each (anatomy, finding) is the model's own zero-shot score on the tensors fvlm_prepare would
make for the study (computed here independently: ct_convert's converter, the mask on the
volume's grid, tasks.training.fvlm_tensors.tensors_for, float16 as stored); anatomies left
out as train_fvlm and evaluate leave them out; no identifier of the input in any output; and a
clear error, with nothing written, for every input that cannot be scored."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from flows import predict as cli
from tasks.ct.anatomy import build_groups, measure
from tasks.ct.convert import convert_dicom_series, convert_nifti, discover
from tasks.ct.dicom_series import group_series, scan_files
from tasks.ct.nifti_io import write_nifti
from tasks.ct.provided_backend import load_mask
from tasks.predict.ct_input import CtRefused
from tasks.predict.ct_predict import predict_ct
from tasks.predict.model_folder import NotAModelFolder, open_model
from tasks.schema.ct import CtConvertParams
from tasks.training.fvlm_tensors import tensors_for
from tests.conftest import REPO_ROOT, stage_params
from tests.helpers.dicom_series import write_series
from tests.helpers.fvlm_folder import write_tiny_conceptclip, write_tiny_fvlm

ANATOMIES = ["lung", "liver", "heart", "kidney", "spleen", "vertebrae", "pulmonary_artery"]
FINDINGS = ["cardiomegaly", "liver_mass", "lung_nodule", "renal_cyst"]
CFG = {**CtConvertParams().model_dump(), "source_paths": "hashed"}
SEGMENT_ANATOMIES = stage_params(REPO_ROOT)["segment"]["anatomies"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """Three sample phantoms (NIfTI and DICOM) with their masks, and the sample's broken studies."""
    from tasks.sample import ct_phantoms

    root = tmp_path_factory.mktemp("sample")
    params = stage_params(REPO_ROOT, **{"sample.output_dir": str(root), "sample.ct.n_studies": 3,
                                        "sample.ct.n_patients": 3, "sample.ct.enhanced_studies": 0,
                                        "sample.ct.tilted_studies": 0})
    ct_phantoms.finalize(params, [ct_phantoms.generate_shard(params, s) for s in ct_phantoms.plan(params)])
    return root / "ct"


@pytest.fixture(scope="module")
def studies(sample) -> dict[str, dict]:
    return {r["case"]: r for r in csv.DictReader(open(sample / "studies.csv", encoding="utf-8"))}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_fvlm(tmp_path_factory.mktemp("fvlm") / "train_fvlm", ANATOMIES, FINDINGS)


@pytest.fixture(scope="module")
def folder(model_dir):
    return open_model(model_dir)


def _case(studies, fmt: str) -> dict:
    return next(r for r in studies.values() if r["expected"] == "ok" and r["format"] == fmt)


def _converted(input_path: Path, tmp: Path) -> dict:
    """ct_convert's row for the one series or NIfTI at input_path (its volume under tmp)."""
    root = str(input_path if input_path.is_dir() else input_path.parent)
    dicom, nifti = discover(input_path)
    if nifti:
        return convert_nifti(nifti[0], CFG, "k", tmp, root)
    headers, _ = scan_files(dicom, root=root)
    (series,) = group_series(headers)
    return convert_dicom_series(series, CFG, "k", tmp, root)


def expected_scores(folder, input_path: Path, mask: Path, tmp: Path, prompts: dict, names=None,
                    groups=None, drop_fov_cut=True, keep=("lung",)) -> tuple[dict, dict]:
    """({(anatomy, finding): probability}, {anatomy: status}) as training's tensors give them."""
    tmp.mkdir(parents=True, exist_ok=True)
    row = _converted(input_path, tmp)
    vol = nib.load(tmp / row["volume"])
    groups = groups or build_groups({a: SEGMENT_ANATOMIES[a] for a in ANATOMIES})
    valid = set(groups.names) if groups.task != "mask-labels" else set(range(1, 256))  # others: no anatomy
    labels = load_mask(str(mask), vol.shape, vol.affine, valid)
    write_nifti(labels, vol.affine, tmp / "labels.nii.gz")
    rows = {r["anatomy"]: r for r in measure(labels, vol.affine, groups)}
    status = {a: "absent" if a not in rows else
              "fov_cut" if drop_fov_cut and rows[a]["touches_fov_edge"] and a not in keep else "usable"
              for a in ANATOMIES}
    pre = folder.config["preprocess"]
    volume, masks = tensors_for(tmp / row["volume"], tmp / "labels.nii.gz",
                                {a: list(r["label_ids"]) for a, r in rows.items()}, ANATOMIES,
                                tuple(pre["volume_size"]), pre["hu_windows"])
    volume = volume.half().float()  # stored as float16 by fvlm_prepare, read back as float32
    pairs = [(a, f) for a in ANATOMIES if status[a] == "usable" for f in FINDINGS]
    names = names or {}

    def texts(template):
        return [template.format(finding=names.get(f, f.replace("_", " ")).lower(), anatomy=a.replace("_", " "))
                for a, f in pairs]
    pe, ne = folder.tokenizer.encode(texts(prompts["positive"])), folder.tokenizer.encode(texts(prompts["negative"]))
    with torch.no_grad():
        p = folder.model.zero_shot_scores(volume[None], masks[None], pe["input_ids"], pe["attention_mask"],
                                          ne["input_ids"], ne["attention_mask"],
                                          torch.tensor([ANATOMIES.index(a) for a, _ in pairs]))[0]
    return {pair: float(v) for pair, v in zip(pairs, p)}, status


def _probabilities(out: Path) -> dict:
    record = json.loads((out / "ct.json").read_text())
    return {(a["anatomy"], f["finding"]): f["probability"] for a in record["anatomies"] for f in a["findings"] or []}


def _assert_no_identifiers(out: Path, values) -> None:
    from PIL import Image

    blobs = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(blobs) == ["ct.json", "overlay.png", "predictions.json"]
    for value in values:
        value = str(value).strip()
        if len(value) >= 4:
            for name, data in blobs.items():
                assert value.encode() not in data, (value, name)
    with Image.open(out / "overlay.png") as im:
        assert not im.info.get("text") and not {k for k in im.info if k not in ("dpi", "gamma")}, im.info


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_sample_probabilities_are_the_models_on_the_training_tensors(folder, sample, studies, fmt, tmp_path):
    case = _case(studies, fmt)
    source, mask = sample / case["path"], sample / case["mask"]
    summary = predict_ct(folder, source, tmp_path / "out", mask=str(mask))
    want, status = expected_scores(folder, source, mask, tmp_path / "check", folder.config["zero_shot"])
    got = _probabilities(tmp_path / "out")
    assert want and set(got) == set(want)
    for pair, p in want.items():
        assert got[pair] == pytest.approx(p, abs=1e-6), pair
    record = json.loads((tmp_path / "out" / "ct.json").read_text())
    assert {a["anatomy"]: a["status"] for a in record["anatomies"]} == status
    assert status["pulmonary_artery"] == "absent"   # another TotalSegmentator task: no ids in this map
    assert record["input"]["source_format"] == fmt and record["study"].startswith("ct-")
    assert record["preprocess"]["hu_windows"] == folder.config["preprocess"]["hu_windows"]
    assert "schema" in record["conversion"]["source"] and record["conversion"]["settings"]["min_slices"] == 2
    assert folder.config["ct_convert"] is None  # the tiny folder's studies table has no conversion.json
    assert "lineage" in record["usability"]["source"]
    assert summary == json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert summary["anatomies"]["usable"] == sum(s == "usable" for s in status.values())
    # no identifier of the sample's (synthetic) patient, study or file, in any output
    _assert_no_identifiers(tmp_path / "out", [case[k] for k in ("PatientID", "PatientName", "StudyInstanceUID",
                                                                "SeriesInstanceUID", "AccessionNumber", "StudyDate",
                                                                "case")] + [str(sample)])


def test_mask_labels_tuned_prompts_and_finding_names(folder, sample, studies, tmp_path):
    from tasks.ct.anatomy import AnatomyGroups

    case = _case(studies, "nifti")
    source, mask = sample / case["path"], sample / case["mask"]
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"5": "liver", "1": "Spleen"}))   # a key and a display name
    evaluate = tmp_path / "evaluate_fvlm"
    evaluate.mkdir()
    chosen = {"index": 1, "positive": "{finding} in the {anatomy}.", "negative": "No {finding} in the {anatomy}."}
    (evaluate / "metrics_detail.json").write_text(json.dumps({
        "pairs_evaluated": 1, "tuning": {"chosen": chosen},
        "zero_shot_auc": {"liver_mass @ liver": 0.9}, "zero_shot_support": {"liver_mass @ liver": {"items": 9}}}))
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"liver_mass": "Hepatic mass"}))
    rc = cli.main([str(folder.path), str(source), "--out", str(tmp_path / "out"), "--mask", str(mask),
                   "--mask-labels", str(labels), "--tuned-by", str(evaluate), "--finding-names", str(names)])
    assert rc == 0
    record = json.loads((tmp_path / "out" / "ct.json").read_text())
    assert record["scoring"]["prompts"] == {k: chosen[k] for k in ("positive", "negative")}
    assert "--tuned-by" in record["scoring"]["prompts_source"]
    by = {a["anatomy"]: a for a in record["anatomies"]}
    assert {a for a, e in by.items() if e["status"] == "usable"} == {"liver", "spleen"}
    assert by["lung"]["findings"] is None and "no label ids" in by["lung"]["detail"]
    liver = {f["finding"]: f for f in by["liver"]["findings"]}
    assert liver["liver_mass"]["test_auc"] == 0.9 and liver["liver_mass"]["name"] == "Hepatic mass"
    assert by["liver"]["top"]["finding"] == "liver_mass" and by["spleen"]["top"] is None  # nothing tested there
    assert 10 in record["segmentation"]["label_values_not_named"]  # a lung lobe: not named, no anatomy
    groups = AnatomyGroups(task="mask-labels", ids={"liver": (5,), "spleen": (1,)}, other_task={},
                           names={5: "liver", 1: "spleen"})
    want, _ = expected_scores(folder, source, mask, tmp_path / "check", chosen, {"liver_mass": "Hepatic mass"}, groups)
    got = _probabilities(tmp_path / "out")
    assert set(got) == set(want)
    assert all(got[k] == pytest.approx(v, abs=1e-6) for k, v in want.items())
    labels.write_text(json.dumps({"5": "gizzard"}))
    with pytest.raises(ValueError, match="none of the model's anatomies"):
        predict_ct(folder, source, tmp_path / "bad", mask=str(mask), mask_labels=str(labels))


def _refusal(folder, source, tmp_path, capsys, **kw) -> str:
    """Runs the CLI and checks the refusal: exit 2, one message, nothing written."""
    out = tmp_path / "refused"
    args = [str(folder.path), str(source), "--out", str(out)]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    assert cli.main(args) == 2
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    return capsys.readouterr().err


def test_refusals_are_clear_errors_with_nothing_written(folder, sample, studies, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "xray.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(png)
    assert "image_2d" in _refusal(folder, png, tmp_path, capsys)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.int16), np.eye(4)), str(flat))
    assert "not_3d" in _refusal(folder, flat, tmp_path, capsys)
    one = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 1), np.int16), np.eye(4)), str(one))
    assert "single_slice" in _refusal(folder, one, tmp_path, capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no_input" in _refusal(folder, empty, tmp_path, capsys)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("scans to follow")
    assert "not_dicom" in _refusal(folder, notes, tmp_path, capsys)
    assert "several_inputs" in _refusal(folder, sample / "input", tmp_path, capsys)
    assert "no file or folder" in _refusal(folder, tmp_path / "missing.nii.gz", tmp_path, capsys)
    # inputs that lie: NaN voxels, a slice step that changes half way (ct_convert's reasons and details)
    holes = np.full((32, 32, 8), -1000.0, np.float32)
    holes[10, 10, 3] = np.nan
    nib.save(nib.Nifti1Image(holes, np.eye(4)), str(tmp_path / "holes.nii.gz"))
    assert "non_finite_voxels" in _refusal(folder, tmp_path / "holes.nii.gz", tmp_path, capsys)
    z = [3.0 * k for k in range(6)] + [15.0 + 5.0 * k for k in range(1, 6)]
    uneven = write_series(tmp_path / "uneven", [(0, 0, v) for v in z], rows=16, cols=16)
    err = _refusal(folder, uneven, tmp_path, capsys)
    assert "uneven_spacing" in err and "steps 3.0 mm x5, 5.0 mm x5" in err
    # the sample's broken studies: ct_convert's own reasons (an MR series is not a CT)
    for case in (r for r in studies.values() if r["expected"] not in ("ok",)):
        assert f"({case['expected']})" in _refusal(folder, sample / case["path"], tmp_path, capsys), case["case"]
    # a mask on another grid
    good, other = _case(studies, "nifti"), _case(studies, "dicom")
    err = _refusal(folder, sample / good["path"], tmp_path, capsys, mask=sample / other["mask"])
    assert "mask_geometry_mismatch" in err


def test_totalsegmentator_without_weights_asks_for_a_mask(folder, sample, studies, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "totalseg_home"))   # no weights there
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    err = _refusal(folder, sample / _case(studies, "nifti")["path"], tmp_path, capsys)
    assert "--mask" in err and "totalseg_download_weights" in err
    config = json.loads((tmp_path / "totalseg_home" / "config.json").read_text())
    assert config["send_usage_stats"] is False


def test_the_training_datas_conversion_settings_are_used(sample, studies, tmp_path, capsys):
    """A model trained on studies converted with min_slices 100 refuses the sample's 48-slice series
    as ct_convert would have; the defaults (min_slices 2) would score it."""
    trained = write_tiny_fvlm(tmp_path / "m" / "train_fvlm", ANATOMIES, FINDINGS,
                              conversion={**CFG, "min_slices": 100, "deid_key": "a secret"})
    assert json.loads((trained / "config.json").read_text())["ct_convert"]["min_slices"] == 100
    assert b"a secret" not in (trained / "config.json").read_bytes()
    case = _case(studies, "dicom")
    with pytest.raises(CtRefused, match="100 needed") as refused:
        predict_ct(open_model(trained), sample / case["path"], tmp_path / "out", mask=str(sample / case["mask"]))
    assert refused.value.reason == "too_few_slices" and not (tmp_path / "out").exists()
    folder = open_model(trained)
    folder.config["ct_convert"] = {**folder.config["ct_convert"], "min_slice": 3}
    with pytest.raises(NotAModelFolder, match="unknown key .ct_convert.min_slice. .did you mean .ct_convert.min_slices"):
        predict_ct(folder, sample / case["path"], tmp_path / "out2", mask=str(sample / case["mask"]))


def test_wrong_model_folders(folder, sample, studies, tmp_path, capsys):
    nifti = sample / _case(studies, "nifti")["path"]
    clip = write_tiny_conceptclip(tmp_path / "train_conceptclip")
    assert cli.main([str(clip), str(nifti), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "NIfTI" in err and "fVLM" in err and not (tmp_path / "o").exists()
    with pytest.raises(NotAModelFolder, match="fVLM"):
        predict_ct(open_model(clip), nifti, tmp_path / "o")
    assert cli.main([str(tmp_path), str(nifti), "--out", str(tmp_path / "o")]) == 2
    assert "not a medconcept model" in capsys.readouterr().err


# -- real CTs (../shared/data through MEDCONCEPT_TEST_DATA) ------------------------------------

@pytest.fixture(scope="module")
def ts_dir(shared_data) -> Path:
    return shared_data / "ct" / "totalsegmentator"


@pytest.mark.realdata
def test_real_nifti_organs_cut_by_the_field_of_view_are_left_out(folder, ts_dir, tmp_path):
    source, mask = ts_dir / "example_ct_sm.nii.gz", ts_dir / "example_seg.nii.gz"
    predict_ct(folder, source, tmp_path / "out", mask=str(mask))
    want, status = expected_scores(folder, source, mask, tmp_path / "check", folder.config["zero_shot"])
    record = json.loads((tmp_path / "out" / "ct.json").read_text())
    by = {a["anatomy"]: a for a in record["anatomies"]}
    assert {a: e["status"] for a, e in by.items()} == status
    assert status["liver"] == "fov_cut" and status["lung"] == "usable"  # 30 slices; lung is kept when cut
    assert by["liver"]["findings"] is None and "field of view" in by["liver"]["detail"]
    got = _probabilities(tmp_path / "out")
    assert want and set(got) == set(want)
    assert all(got[k] == pytest.approx(v, abs=1e-6) for k, v in want.items())
    assert record["input"]["shape"] == [122, 101, 30]


@pytest.mark.realdata
def test_real_dicom_series_scored_without_identifiers(ts_dir, tmp_path):
    import pydicom

    # a model trained with drop_fov_cut false (lineage.json says so): the 20-slice series cuts every organ
    model = write_tiny_fvlm(tmp_path / "fvlm", ANATOMIES, FINDINGS, **{"train_fvlm.drop_fov_cut": "false"})
    folder = open_model(model)
    source, mask = ts_dir / "example_ct_dicom", ts_dir / "example_seg_dicom.nii.gz"
    predict_ct(folder, source, tmp_path / "out", mask=str(mask))
    want, status = expected_scores(folder, source, mask, tmp_path / "check", folder.config["zero_shot"],
                                   drop_fov_cut=False)
    got = _probabilities(tmp_path / "out")
    assert {"liver", "spleen"} <= {a for a, s in status.items() if s == "usable"}
    assert want and set(got) == set(want)
    assert all(got[k] == pytest.approx(v, abs=1e-6) for k, v in want.items())
    record = json.loads((tmp_path / "out" / "ct.json").read_text())
    assert record["usability"]["drop_fov_cut"] is False and "lineage" in record["usability"]["source"]
    assert record["input"]["source_format"] == "dicom" and record["input"]["n_files"] == 20
    identifiers = {str(source), source.name}
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        identifiers.add(path.name)
        for tag in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID", "FrameOfReferenceUID", "StudyDate", "SeriesDate", "AcquisitionDate",
                    "ContentDate", "StudyTime", "AccessionNumber", "InstitutionName", "StationName",
                    "DeviceSerialNumber", "ReferringPhysicianName", "StudyID", "Manufacturer",
                    "ManufacturerModelName"):
            if ds.get(tag) not in (None, ""):
                identifiers.add(str(ds.get(tag)))
    assert len(identifiers) > 20
    _assert_no_identifiers(tmp_path / "out", identifiers)


@pytest.mark.realdata
def test_real_single_slice_refused(folder, shared_data, tmp_path, capsys):
    err = _refusal(folder, shared_data / "ct" / "pydicom" / "CT_small.dcm", tmp_path, capsys)
    assert "single_slice" in err
