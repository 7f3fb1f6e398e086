"""fVLM data: CT volumes, their anatomy label maps and per-anatomy report descriptions.

Volumes and masks are resampled once to the model's grid and kept in memory (the
tables carry one row per study and anatomy, so adding columns upstream is harmless).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from tasks.training.splits import HELDOUT, TRAIN, split_of


@dataclass
class StudyRecord:
    study_id: str
    patient_id: str
    series_id: str
    volume: Path
    labels: Path
    anatomy_labels: dict[str, list[int]]  # anatomy -> label ids in this series
    usable: dict[str, bool]  # segmented and not cut by the field of view
    texts: dict[str, dict] = field(default_factory=dict)  # anatomy -> description, normal, findings
    split: str = TRAIN


def _read(path: Path, columns: list[str]) -> list[dict]:
    schema = pq.read_schema(path)
    return pq.read_table(path, columns=[c for c in columns if c in schema.names]).to_pylist()


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return base / p


def load_records(studies: Path, anatomy: Path, texts: Path, labels_dir: Path, anatomies: list[str],
                 heldout_fraction: float, salt: str, finding_field: str = "finding_keys",
                 drop_fov_cut: bool = True, min_voxels: int = 1,
                 keep_fov_cut: tuple[str, ...] = ()) -> tuple[list[StudyRecord], list[dict]]:
    study_rows = _read(studies, ["patient_id", "study_id", "series_id", "volume"])
    anat_rows = _read(anatomy, ["series_id", "anatomy", "label_ids", "voxels", "touches_fov_edge"])
    text_rows = _read(texts, ["study_id", "anatomy", "description", "is_normal", "finding_cuis",
                              "finding_keys", "finding_names"])
    by_series: dict[str, list[dict]] = {}
    for r in anat_rows:
        by_series.setdefault(r["series_id"], []).append(r)
    by_study: dict[str, dict[str, dict]] = {}
    wanted = set(anatomies)
    for r in text_rows:
        if r["anatomy"] not in wanted or not (r.get("description") or "").strip():
            continue
        found = r.get(finding_field)
        if found is None:
            found = r.get("finding_cuis") or []
        by_study.setdefault(r["study_id"], {})[r["anatomy"]] = {
            "description": r["description"].strip(), "normal": bool(r.get("is_normal")),
            "findings": sorted(set(found or [])) if not r.get("is_normal") else []}
    ct_dir = studies.parent
    records, rejected, seen = [], [], set()
    for row in sorted(study_rows, key=lambda r: (r["study_id"], r["series_id"])):
        sid = row["study_id"]
        def reject(reason, detail):
            rejected.append({"item": row["series_id"], "source": sid, "reason": reason, "detail": detail})
        if sid in seen:
            reject("extra_series", "the study's first series (by id) is used"); continue
        volume = _resolve(row["volume"], ct_dir)
        label = labels_dir / f"{row['series_id']}.nii.gz"
        if not volume.is_file():
            reject("volume_missing", f"{volume} not found"); continue
        if not label.is_file():
            reject("labels_missing", "no label map from the segment stage"); continue
        if sid not in by_study:
            reject("no_descriptions", "no anatomy description from split_reports"); continue
        anat = {}
        usable = {}
        for r in by_series.get(row["series_id"], []):
            if r["anatomy"] in wanted and (r.get("voxels") or 0) >= min_voxels:
                anat[r["anatomy"]] = [int(i) for i in (r.get("label_ids") or [])]
                cut = bool(r.get("touches_fov_edge")) and r["anatomy"] not in keep_fov_cut
                usable[r["anatomy"]] = not (drop_fov_cut and cut)
        if not anat:
            reject("no_anatomy", "no segmented anatomy of the configured list"); continue
        seen.add(sid)
        records.append(StudyRecord(sid, row["patient_id"], row["series_id"], volume, label, anat, usable,
                                   by_study[sid], split_of(row["patient_id"], heldout_fraction, salt)))
    return records, rejected


def _load_nifti(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    return torch.from_numpy(img.get_fdata(dtype="float32") if img.get_data_dtype().kind == "f"
                            else __import__("numpy").asarray(img.dataobj))


def hu_windows_of(section: dict) -> list[tuple[float, float]]:
    """The HU windows a model reads, one input channel each (params or a saved config)."""
    windows = section.get("hu_windows") or [(-1000.0, 1000.0)]
    out = [(float(lo), float(hi)) for lo, hi in windows]
    if any(hi <= lo for lo, hi in out):
        raise ValueError(f"hu_windows must be [low, high] pairs with low < high, got {windows}")
    return out


def preprocess(record: StudyRecord, anatomies: list[str], size: tuple[int, int, int],
               hu_windows: list[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(volume [C, D, H, W] in [-1, 1], one channel per HU window; masks [A, D, H, W] bool)
    on the model grid.

    Several windows (lung, soft tissue, wide) keep both a -45 HU liver lesion and lung
    texture visible, as radiologists read them. NIfTI arrays are (x, y, z); the model's
    (D, H, W) is (z, y, x). A mask voxel is set when any source voxel under it belongs to
    the anatomy, so small organs survive.
    """
    vol = _load_nifti(record.volume).float()
    lab = _load_nifti(record.labels).long()
    if vol.shape != lab.shape:
        raise ValueError(f"volume {tuple(vol.shape)} and labels {tuple(lab.shape)} differ")
    vol = vol.permute(2, 1, 0).contiguous()
    lab = lab.permute(2, 1, 0).contiguous()
    vol = torch.stack([(vol.clamp(lo, hi) - lo) / (hi - lo) * 2 - 1 for lo, hi in hu_windows])
    vol = F.interpolate(vol[None], size=size, mode="trilinear", align_corners=False)[0]
    masks = torch.zeros((len(anatomies), *size), dtype=torch.bool)
    for a, name in enumerate(anatomies):
        ids = record.anatomy_labels.get(name)
        if not ids:
            continue
        m = torch.isin(lab, torch.tensor(ids)).float()[None, None]
        masks[a] = F.adaptive_max_pool3d(m, size)[0, 0] > 0 if tuple(m.shape[2:]) != tuple(size) else m[0, 0] > 0
    return vol, masks


class StudyDataset:
    """get(i, epoch) -> sample dict; epoch < 0: no augmentation."""

    def __init__(self, records: list[StudyRecord], anatomies: list[str], findings: dict[str, int], tokenizer,
                 size: tuple[int, int, int], hu_windows=((-1000.0, 1000.0),), augment: dict | None = None,
                 seed: int = 0):
        self.records, self.anatomies, self.size = records, list(anatomies), tuple(size)
        self.augment, self.seed = dict(augment or {}), int(seed)
        a_index = {a: i for i, a in enumerate(self.anatomies)}
        self.volumes, self.masks = [], []
        for r in records:
            v, m = preprocess(r, self.anatomies, self.size, [tuple(w) for w in hu_windows])
            self.volumes.append(v.to(torch.float16))  # halves memory; inputs need no more
            self.masks.append(m)
        n, A = len(records), len(self.anatomies)
        self.usable = torch.zeros(n, A, dtype=torch.bool)
        self.normal = torch.zeros(n, A, dtype=torch.bool)
        self.findings = torch.zeros(n, A, max(1, len(findings)), dtype=torch.bool)
        texts, where = [], []
        for i, r in enumerate(records):
            for name, ok in r.usable.items():
                self.usable[i, a_index[name]] = ok
            for name, t in r.texts.items():
                a = a_index[name]
                self.normal[i, a] = t["normal"]
                for f in t["findings"]:
                    if f in findings:
                        self.findings[i, a, findings[f]] = True
                texts.append(t["description"]); where.append((i, a))
        enc = tokenizer.encode(texts) if texts else {"input_ids": torch.zeros(0, 2, dtype=torch.long),
                                                     "attention_mask": torch.zeros(0, 2, dtype=torch.long)}
        self.text_of: dict[tuple[int, int], int] = {w: k for k, w in enumerate(where)}
        self.text_ids, self.text_mask = enc["input_ids"], enc["attention_mask"]

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int, epoch: int) -> dict:
        vol = self.volumes[i].float()
        masks = self.masks[i]
        a = self.augment
        if epoch >= 0 and a.get("enabled", True) and a:
            g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_033 + i) % (2**63 - 1))
            scale = 1 + a.get("intensity_scale", 0.0) * (2 * float(torch.rand((), generator=g)) - 1)
            shift = a.get("intensity_shift", 0.0) * (2 * float(torch.rand((), generator=g)) - 1)
            vol = vol * scale + shift
            if a.get("noise", 0.0):
                vol = vol + a["noise"] * torch.randn(vol.shape, generator=g)
            shift = int(a.get("max_shift", 0))
            if shift:  # the same small translation for volume and masks keeps them aligned
                d = [int(v) for v in torch.randint(-shift, shift + 1, (3,), generator=g)]
                vol = torch.roll(vol, shifts=d, dims=(1, 2, 3))
                masks = torch.roll(masks, shifts=d, dims=(1, 2, 3))
        rows = [(a_, self.text_ids[k], self.text_mask[k]) for a_ in range(len(self.anatomies))
                if self.usable[i, a_] and (k := self.text_of.get((i, a_))) is not None]
        return {"volume": vol, "masks": masks, "usable": self.usable[i], "normal": self.normal[i],
                "findings": self.findings[i], "texts": rows}


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
    return [r for r in records if r.split == TRAIN], [r for r in records if r.split == HELDOUT]
