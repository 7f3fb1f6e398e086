"""Anatomy grouping of TotalSegmentator classes, and per-anatomy measurements of a label map.

`anatomy.parquet` (ANATOMY_SCHEMA), one row per (series, anatomy) with at least one voxel:

  series_id, study_id, patient_id   pseudonyms, as in ct_convert's studies.parquet
  anatomy          key of segment.anatomies (lung, heart, liver, ...)
  label_ids        TotalSegmentator class ids present in this anatomy's mask
  voxels           voxel count
  volume_ml        voxels x voxel volume / 1000
  bbox_x0, bbox_y0, bbox_z0, bbox_x1, bbox_y1, bbox_z1
                   bounding box in voxel indices of the RAS+ volume, half-open [x0, x1)
  touches_fov_edge true when the mask reaches a face of the volume (the organ is cut by
                   the field of view, so its volume is a lower bound)
  edge_faces       which faces, e.g. "z-;z+" (x- is the patient's left, y- posterior, z- inferior)
  backend          provided | totalsegmentator
  stage            "segment"
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

STAGE = "segment"
DEFAULT_TASK = "total"

ANATOMY_SCHEMA = pa.schema([
    ("series_id", pa.string()), ("study_id", pa.string()), ("patient_id", pa.string()),
    ("anatomy", pa.string()), ("label_ids", pa.list_(pa.int32())), ("voxels", pa.int64()),
    ("volume_ml", pa.float64()),
    ("bbox_x0", pa.int32()), ("bbox_y0", pa.int32()), ("bbox_z0", pa.int32()),
    ("bbox_x1", pa.int32()), ("bbox_y1", pa.int32()), ("bbox_z1", pa.int32()),
    ("touches_fov_edge", pa.bool_()), ("edge_faces", pa.string()), ("backend", pa.string()),
    ("stage", pa.string()),
])


class AnatomyConfigError(ValueError):
    """segment.anatomies names classes TotalSegmentator does not have."""


def class_maps() -> dict[str, dict[int, str]]:
    """TotalSegmentator's class maps (task -> id -> class name) of the installed version."""
    from totalsegmentator.map_to_binary import class_map

    return class_map


@dataclass(frozen=True)
class AnatomyGroups:
    task: str  # the task whose label ids the label maps carry
    ids: dict  # anatomy -> tuple of class ids in `task`
    other_task: dict  # anatomy -> (task, class names) for classes from other tasks
    names: dict  # class id -> class name in `task`

    def label_ids(self) -> list[int]:
        return sorted({i for ids in self.ids.values() for i in ids})

    def class_names(self) -> list[str]:
        return [self.names[i] for i in self.label_ids()]


def build_groups(anatomies: dict, maps: dict | None = None, task: str = DEFAULT_TASK) -> AnatomyGroups:
    """Resolve `anatomy -> [class name | task:class | glob]` against the class maps.

    Every entry must match at least one class of its task, and no class may belong to
    two anatomies; errors list all problems at once (start-up validation).
    """
    maps = maps if maps is not None else class_maps()
    if task not in maps:
        raise AnatomyConfigError(f"TotalSegmentator has no task {task!r}")
    names = {int(i): n for i, n in maps[task].items()}
    by_name = {n: i for i, n in names.items()}
    problems, ids, other, owner = [], {}, {}, {}
    for anatomy, entries in (anatomies or {}).items():
        if isinstance(entries, str):
            entries = [entries]
        found: set[int] = set()
        for entry in entries:
            entry_task, pattern = (entry.split(":", 1) if ":" in entry else (task, entry))
            if entry_task not in maps:
                problems.append(f"{anatomy}: unknown task {entry_task!r}")
                continue
            candidates = list(maps[entry_task].values())
            matched = [c for c in candidates if fnmatch.fnmatchcase(c, pattern)]
            if not matched:
                problems.append(f"{anatomy}: no class {pattern!r} in task {entry_task!r}")
                continue
            if entry_task != task:
                other.setdefault(anatomy, (entry_task, []))[1].extend(matched)
                continue
            for name in matched:
                found.add(by_name[name])
        for i in found:
            if i in owner and owner[i] != anatomy:
                problems.append(f"class {names[i]!r} in both {owner[i]} and {anatomy}")
            owner[i] = anatomy
        if found:
            ids[anatomy] = tuple(sorted(found))
    if problems:
        raise AnatomyConfigError("segment.anatomies: " + "; ".join(problems))
    return AnatomyGroups(task=task, ids=ids, other_task={k: (t, tuple(v)) for k, (t, v) in other.items()},
                         names=names)


_FACES = ("x-", "x+", "y-", "y+", "z-", "z+")


def measure(labels: np.ndarray, affine: np.ndarray, groups: AnatomyGroups) -> list[dict]:
    """Per-anatomy voxels, volume, bounding box and field-of-view contact of one label map."""
    from scipy import ndimage

    voxel_ml = float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    max_label = int(labels.max()) if labels.size else 0
    counts = np.bincount(labels.reshape(-1), minlength=max_label + 1)
    boxes = ndimage.find_objects(labels) if max_label else []
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    on_face = [set(np.unique(f).tolist()) for f in faces]
    rows = []
    for anatomy, ids in sorted(groups.ids.items()):
        present = [i for i in ids if i <= max_label and counts[i] > 0]
        if not present:
            continue
        lo = np.min([[s.start for s in boxes[i - 1]] for i in present], axis=0)
        hi = np.max([[s.stop for s in boxes[i - 1]] for i in present], axis=0)
        touched = [face for face, labs in zip(_FACES, on_face) if labs.intersection(present)]
        voxels = int(sum(int(counts[i]) for i in present))
        rows.append({
            "anatomy": anatomy, "label_ids": present, "voxels": voxels,
            "volume_ml": round(voxels * voxel_ml, 4),
            "bbox_x0": int(lo[0]), "bbox_y0": int(lo[1]), "bbox_z0": int(lo[2]),
            "bbox_x1": int(hi[0]), "bbox_y1": int(hi[1]), "bbox_z1": int(hi[2]),
            "touches_fov_edge": bool(touched), "edge_faces": ";".join(touched), "stage": STAGE,
        })
    return rows
