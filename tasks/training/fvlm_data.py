"""fVLM data: the studies that pair a prepared volume with per-anatomy report descriptions,
and the dataset that reads each study's tensors from disk when a batch needs it.

Volumes and masks are prepared once at the model's grid by the fvlm_prepare stage
(tasks.training.fvlm_tensors); here only the small per-study tables stay in memory
(usable [N, A], normal [N, A], findings [N, A, F], the tokenized descriptions), so the
corpus never has to fit in RAM. The tables carry one row per study (or series) and
anatomy, so columns added upstream are harmless.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tasks.training.fvlm_tensors import read_study_tensors
from tasks.training.splits import TRAIN, VALIDATION, SplitSpec

KEY_KINDS = {"st-": "study", "ac-": "accession", "se-": "series", "pt-": "patient", "src-": "path"}


@dataclass
class StudyRecord:
    study_id: str
    patient_id: str
    series_id: str
    tensors: Path                 # the study's prepared tensors file (fvlm_prepare)
    mask_index: dict[str, int]    # anatomy -> its mask channel in that file (segmented ones only)
    usable: dict[str, bool]       # segmented and not cut by the field of view
    texts: dict[str, dict] = field(default_factory=dict)  # anatomy -> description, normal, findings
    split: str = TRAIN


@dataclass
class StudyTable:
    """What load_records found: the trainable studies, every rejected item, pairing counts."""
    records: list[StudyRecord]
    rejected: list[dict]
    counts: dict


@dataclass(frozen=True)
class PreparedSet:
    folder: Path
    meta: dict                    # prepared.json: grid, hu_windows, anatomies, axes, mask_pooling
    rows: dict[str, dict]         # series_id -> its tensors.parquet row


def _read(path: Path, columns: list[str]) -> list[dict]:
    schema = pq.read_schema(path)
    return pq.read_table(path, columns=[c for c in columns if c in schema.names]).to_pylist()


def read_prepared(folder: Path) -> PreparedSet:
    """prepared.json and tensors.parquet of an fvlm_prepare output folder."""
    folder = Path(folder)
    meta_path, table = folder / "prepared.json", folder / "tensors.parquet"
    for path in (meta_path, table):
        if not path.is_file():
            raise FileNotFoundError(f"train_fvlm.prepared: {path} not found (run the fvlm_prepare stage first)")
    rows = _read(table, ["series_id", "study_id", "tensors", "anatomies", "sha256"])
    return PreparedSet(folder, json.loads(meta_path.read_text()), {r["series_id"]: r for r in rows})


def check_prepared(meta: dict, size, hu_windows, anatomies: list[str], where: str = "train_fvlm") -> None:
    """The prepared tensors must be what the model reads: its grid, its HU windows (one
    channel each, in order) and every anatomy it aligns. A mismatch names the key to fix."""
    grid = [int(v) for v in meta["grid"]]
    if grid != [int(v) for v in size]:
        raise ValueError(f"prepared.json grid {grid} differs from the model's ct.volume_size {list(size)}: "
                         f"set fvlm_prepare.grid to null (the model's grid) or to {list(size)} and rerun "
                         f"fvlm_prepare, or set {where}.model.ct.volume_size to {grid}")
    prepared_hu = [[float(lo), float(hi)] for lo, hi in meta["hu_windows"]]
    wanted_hu = [[float(lo), float(hi)] for lo, hi in hu_windows]
    if prepared_hu != wanted_hu:
        raise ValueError(f"prepared.json hu_windows {prepared_hu} differ from {where}.hu_windows {wanted_hu}: "
                         f"rerun fvlm_prepare (it prepares {where}.hu_windows) or set {where}.hu_windows "
                         f"to {prepared_hu}")
    missing = [a for a in anatomies if a not in set(meta["anatomies"])]
    if missing:
        raise ValueError(f"prepared.json anatomies {list(meta['anatomies'])} lack {missing} of {where}.anatomies: "
                         f"rerun fvlm_prepare (it prepares {where}.anatomies) or drop them from {where}.anatomies")


def key_kind(key: str) -> str:
    """study / accession / ... from a keyed pseudonym's prefix; 'unprefixed' otherwise."""
    return next((kind for prefix, kind in KEY_KINDS.items() if str(key).startswith(prefix)), "unprefixed")


def study_key_map(study_rows: list[dict]) -> dict[str, str]:
    """Report/label key -> study_id: a study's own id (st-…), and its accession id (ac-…)
    where that accession belongs to exactly one study."""
    out = {r["study_id"]: r["study_id"] for r in study_rows}
    by_accession: dict[str, set[str]] = {}
    for r in study_rows:
        if r.get("accession_id"):
            by_accession.setdefault(r["accession_id"], set()).add(r["study_id"])
    for accession, studies in by_accession.items():
        if len(studies) == 1:
            out[accession] = next(iter(studies))
    return out


def _kinds(keys) -> str:
    counts = Counter(key_kind(k) for k in keys)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"


def no_pairs_message(report_keys: set[str], study_rows: list[dict]) -> str:
    """Why no report key matched a study, with the setting that usually fixes it."""
    accessions = {r["accession_id"] for r in study_rows if r.get("accession_id")}
    kinds = {key_kind(k) for k in report_keys}
    text = (f"no report matches a volume: report keys (anatomy_texts study_id) are {_kinds(report_keys)}; "
            f"studies.parquet has study_id {_kinds({r['study_id'] for r in study_rows})} and accession_id "
            f"{_kinds(accessions)}")
    if "accession" in kinds and not accessions:
        return (text + ": reports are keyed ac-… (accession) but no study in studies.parquet has an accession_id: "
                       "set split_reports.study_key_kind=study (ct_rate_volume for CT-RATE's VolumeName) and key "
                       "the reports by the study, as ct_convert keys the volumes")
    if "study" in kinds:
        return text + (": the st-… keys are not these studies' ids: key reports and volumes by the same "
                       "StudyInstanceUID, pseudonymised with the same deid key")
    return text + ": set split_reports.study_key_kind to the kind of identifier the reports carry (study, accession)"


def load_records(studies: Path, anatomy: Path, texts: Path, prepared: PreparedSet, anatomies: list[str],
                 split: SplitSpec, finding_field: str, drop_fov_cut: bool, min_voxels: int,
                 keep_fov_cut: tuple[str, ...], reference_labels: Path | None) -> StudyTable:
    """Every series of studies.parquet, every report key and every reference-label key that
    pairs with no volume: a record or a rejected row each."""
    study_rows = _read(studies, ["patient_id", "study_id", "series_id", "accession_id", "source_split"])
    split = split.with_source_splits([(r["patient_id"], r.get("source_split")) for r in study_rows])
    anat_rows = _read(anatomy, ["series_id", "anatomy", "voxels", "touches_fov_edge"])
    text_rows = _read(texts, ["study_id", "anatomy", "description", "is_normal", "finding_cuis",
                              "finding_keys", "finding_names"])
    label_keys = {r["study_id"] for r in _read(reference_labels, ["study_id"])} if reference_labels else set()
    key_to_study = study_key_map(study_rows)
    rejected: list[dict] = []

    # report keys -> studies; a report that reaches no volume leaves as a rejected row
    report_keys = sorted({r["study_id"] for r in text_rows})
    report_of: dict[str, str] = {}  # study_id -> the report key used
    for key in report_keys:
        sid = key_to_study.get(key)
        if sid is None:
            rejected.append({"item": key, "source": "anatomy_texts", "reason": "report_without_volume",
                             "detail": f"no study in studies.parquet has this {key_kind(key)} key"})
        elif sid in report_of:
            rejected.append({"item": key, "source": "anatomy_texts", "reason": "duplicate_report",
                             "detail": f"study {sid} is reported under {report_of[sid]} too; that one is used"})
        else:
            report_of[sid] = key
    for key in sorted(label_keys):
        if key not in key_to_study:
            rejected.append({"item": key, "source": "reference_labels", "reason": "label_without_volume",
                             "detail": f"no study in studies.parquet has this {key_kind(key)} key"})
    volume_studies = {r["study_id"] for r in study_rows}
    unmatched_reports = [k for k in report_keys if k not in key_to_study]
    unmatched_labels = [k for k in label_keys if k not in key_to_study]
    counts = {
        # the items of this stage: every series, and every report or label key that reaches no volume
        "items_in": len(study_rows) + len(report_keys) - len(report_of) + len(unmatched_labels),
        "series_in": len(study_rows), "report_keys_in": len(report_keys), "label_keys_in": len(label_keys),
        "studies_with_volume": len(volume_studies),
        "studies_with_report": len(report_of) + len(unmatched_reports),
        "studies_paired": len(volume_studies & set(report_of)),
    }
    if counts["studies_with_volume"] and report_keys and not counts["studies_paired"]:
        raise ValueError(no_pairs_message(set(report_keys), study_rows))

    wanted = set(anatomies)
    by_key: dict[str, dict[str, dict]] = {}
    # one object per distinct (description, normal, findings): most anatomy descriptions repeat
    # across studies ("No pleural effusion."), so the records grow by references, not strings
    distinct: dict[tuple, dict] = {}
    for r in text_rows:
        if r["anatomy"] not in wanted or not (r.get("description") or "").strip():
            continue
        found = r.get(finding_field)
        if found is None:
            found = r.get("finding_cuis") or []
        normal = bool(r.get("is_normal"))
        entry = (r["description"].strip(), normal, tuple(sorted(set(found or []))) if not normal else ())
        text = distinct.get(entry)
        if text is None:
            text = distinct[entry] = {"description": entry[0], "normal": normal, "findings": list(entry[2])}
        by_key.setdefault(r["study_id"], {})[r["anatomy"]] = text
    del text_rows
    by_series: dict[str, list[dict]] = {}
    for r in anat_rows:
        by_series.setdefault(r["series_id"], []).append(r)
    prepared_anatomies = list(prepared.meta["anatomies"])

    records, seen = [], set()
    for row in sorted(study_rows, key=lambda r: (r["study_id"], r["series_id"])):
        sid = row["study_id"]

        def reject(reason, detail):
            rejected.append({"item": row["series_id"], "source": sid, "reason": reason, "detail": detail})
        if sid in seen:
            reject("extra_series", "the study's first series (by id) is used"); continue
        prep = prepared.rows.get(row["series_id"])
        if prep is None:
            reject("not_prepared", "no tensors from fvlm_prepare (see its rejected.parquet)"); continue
        tensors = prepared.folder / prep["tensors"]
        if not tensors.is_file():
            reject("tensors_missing", f"{tensors} not found"); continue
        texts_of = by_key.get(report_of.get(sid, ""))
        if not texts_of:
            reject("no_descriptions", "no anatomy description from split_reports"); continue
        channels = list(prep["anatomies"]) if prep.get("anatomies") is not None else prepared_anatomies
        mask_index, usable = {}, {}
        for r in by_series.get(row["series_id"], []):
            name = r["anatomy"]
            if name in wanted and name in channels and (r.get("voxels") or 0) >= min_voxels:
                mask_index[name] = channels.index(name)
                cut = bool(r.get("touches_fov_edge")) and name not in keep_fov_cut
                usable[name] = not (drop_fov_cut and cut)
        if not mask_index:
            reject("no_anatomy", "no segmented anatomy of the configured list"); continue
        seen.add(sid)
        records.append(StudyRecord(sid, row["patient_id"], row["series_id"], tensors, mask_index, usable,
                                   texts_of, split.of(row["patient_id"])))
    return StudyTable(records, rejected, counts)


def hu_windows_of(section: dict) -> list[tuple[float, float]]:
    """The HU windows a model reads, one input channel each (params or a saved config)."""
    windows = section.get("hu_windows") or [(-1000.0, 1000.0)]
    out = [(float(lo), float(hi)) for lo, hi in windows]
    if any(hi <= lo for lo, hi in out):
        raise ValueError(f"hu_windows must be [low, high] pairs with low < high, got {windows}")
    return out


class StudyDataset:
    """get(i, epoch) -> sample dict; epoch < 0: no augmentation.

    A study's volume and masks are read from its tensors file on each get (in a DataLoader
    worker when num_workers > 0); with cache_in_memory the decoded tensors are kept after
    the first read (small corpora: the tiny preset). Pickling drops that cache, so the
    dataset reaches workers as its small tables only.
    """

    def __init__(self, records: list[StudyRecord], anatomies: list[str], findings: dict[str, int], tokenizer,
                 size: tuple[int, int, int], hu_windows=((-1000.0, 1000.0),), augment: dict | None = None,
                 seed: int = 0, cache_in_memory: bool = False):
        records = list(records)
        self.anatomies, self.size = list(anatomies), tuple(int(v) for v in size)
        self.channels = len(list(hu_windows))
        self.augment, self.seed, self.cache_in_memory = dict(augment or {}), int(seed), bool(cache_in_memory)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        a_index = {a: i for i, a in enumerate(self.anatomies)}
        n, A = len(records), len(self.anatomies)
        self.usable = torch.zeros(n, A, dtype=torch.bool)
        self.normal = torch.zeros(n, A, dtype=torch.bool)
        self.findings = torch.zeros(n, A, max(1, len(findings)), dtype=torch.bool)
        # mask channel of each model anatomy in the study's file; -1: not segmented there
        self.mask_channels = torch.full((n, A), -1, dtype=torch.long)
        # the encoded description of each (study, anatomy); -1: none
        self.text_index = torch.full((n, A), -1, dtype=torch.int32)
        distinct: dict[str, int] = {}  # many descriptions repeat ("Lung shows no ..."): encode each once
        for i, r in enumerate(records):
            for name, ok in r.usable.items():
                self.usable[i, a_index[name]] = ok
            for name, channel in r.mask_index.items():
                self.mask_channels[i, a_index[name]] = channel
            for name, t in r.texts.items():
                a = a_index[name]
                self.normal[i, a] = t["normal"]
                for f in t["findings"]:
                    if f in findings:
                        self.findings[i, a, findings[f]] = True
                self.text_index[i, a] = distinct.setdefault(t["description"], len(distinct))
        enc = tokenizer.encode(list(distinct)) if distinct else {
            "input_ids": torch.zeros(0, 2, dtype=torch.long), "attention_mask": torch.zeros(0, 2, dtype=torch.long)}
        # stored narrow (a quarter and an eighth of int64), handed out as the model's int64
        self.text_ids, self.text_mask = enc["input_ids"].to(torch.int32), enc["attention_mask"].to(torch.uint8)
        # arrays only, no Python object per study (the records are not kept): memory grows by
        # bytes per study, and forked loader workers read it without touching (so copying) pages
        self._paths = np.array([str(r.tensors) for r in records] or [""])
        self._identity = (self.mask_channels == torch.arange(A)).all(1)  # the file's channels are ours
        self._n = n

    def __len__(self) -> int:
        return self._n

    def pairs(self) -> int:
        """(study, anatomy) pairs that train: the anatomy usable and described."""
        return int((self.usable & (self.text_index >= 0)).sum())

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def tensors(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(volume float16 [C, D, H, W], masks bool [A, D, H, W] in this dataset's anatomy order)."""
        if i in self._cache:
            return self._cache[i]
        path = str(self._paths[i])
        volume, stored = read_study_tensors(path)
        if tuple(volume.shape) != (self.channels, *self.size) or tuple(stored.shape[1:]) != self.size:
            raise ValueError(f"{path}: volume {tuple(volume.shape)}, masks {tuple(stored.shape)}; the model reads "
                             f"{self.channels} channels at {self.size}")
        channels = self.mask_channels[i]
        if self._identity[i] and stored.shape[0] == len(self.anatomies):
            masks = stored  # the file holds this dataset's anatomies, in its order
        elif stored.shape[0]:
            masks = stored[channels.clamp(min=0)]
            masks[channels < 0] = False
        else:  # nothing segmented in this study's file
            masks = torch.zeros((len(self.anatomies), *self.size), dtype=torch.bool)
        if self.cache_in_memory:
            self._cache[i] = (volume, masks)
        return volume, masks

    def get(self, i: int, epoch: int) -> dict:
        volume, masks = self.tensors(i)
        vol = volume.to(torch.float32, copy=True)  # a copy: the in-place steps below never touch the cache
        a = self.augment
        if epoch >= 0 and a.get("enabled", True) and a:
            g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_033 + i) % (2**63 - 1))
            scale = 1 + a.get("intensity_scale", 0.0) * (2 * float(torch.rand((), generator=g)) - 1)
            shift = a.get("intensity_shift", 0.0) * (2 * float(torch.rand((), generator=g)) - 1)
            if scale != 1 or shift:
                vol.mul_(scale).add_(shift)
            if a.get("noise", 0.0):
                vol.add_(torch.randn(vol.shape, generator=g), alpha=a["noise"])
            shift = int(a.get("max_shift", 0))
            if shift:  # the same small translation for volume and masks keeps them aligned
                d = [int(v) for v in torch.randint(-shift, shift + 1, (3,), generator=g)]
                vol, masks = roll3(vol, d), roll3(masks, d)
        rows = [(a_, self.text_ids[k].long(), self.text_mask[k].long()) for a_ in range(len(self.anatomies))
                if self.usable[i, a_] and (k := int(self.text_index[i, a_])) >= 0]
        return {"volume": vol, "masks": masks, "usable": self.usable[i], "normal": self.normal[i],
                "findings": self.findings[i], "texts": rows}


def roll3(x: torch.Tensor, shifts: list[int]) -> torch.Tensor:
    """torch.roll(x, shifts, dims=(1, 2, 3)) in one copy (torch.roll copies once per dim)."""
    out = torch.empty_like(x)
    spans = []
    for size, k in zip(x.shape[1:], shifts):
        k %= size
        # (source, destination) pieces of one axis: the tail wraps to the front
        spans.append([(slice(size - k, size), slice(0, k)), (slice(0, size - k), slice(k, size))] if k
                     else [(slice(0, size), slice(0, size))])
    for sd, dd in spans[0]:
        for sh, dh in spans[1]:
            for sw, dw in spans[2]:
                out[:, dd, dh, dw] = x[:, sd, sh, sw]
    return out


def collate(samples: list[dict]) -> dict:
    A = samples[0]["masks"].shape[0]
    ids, masks, index, rows, unique = [], [], [], [], {}
    for b, s in enumerate(samples):
        for a, tid, tmask in s["texts"]:
            # many descriptions are the same sentence ("X shows no significant abnormality."):
            # each distinct one is encoded once per batch
            k = tuple(tid[tmask.bool()].tolist())
            if k not in unique:
                unique[k] = len(ids)
                ids.append(tid); masks.append(tmask)
            rows.append(unique[k]); index.append(b * A + a)
    if ids:
        text_ids, text_mask = torch.stack(ids), torch.stack(masks)
        width = max(2, int(text_mask.sum(1).max()))
        text_ids, text_mask = text_ids[:, :width], text_mask[:, :width]
    else:
        text_ids, text_mask = torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long)
    return {
        "volumes": torch.stack([s["volume"] for s in samples]),
        "masks": torch.stack([s["masks"] for s in samples]),
        "usable": torch.stack([s["usable"] for s in samples]),
        "normal": torch.stack([s["normal"] for s in samples]),
        "findings": torch.stack([s["findings"] for s in samples]),
        "text_ids": text_ids, "text_mask": text_mask, "text_rows": torch.tensor(rows, dtype=torch.long),
        "text_index": torch.tensor(index, dtype=torch.long),
    }


def split_records(records):
    """(train, validation): what training reads; the test side is evaluate's alone."""
    return [r for r in records if r.split == TRAIN], [r for r in records if r.split == VALIDATION]
