"""One study's fVLM training tensors at the model grid: how they are computed from a CT
volume and its anatomy label map, and the deterministic file that holds them.

The file is a zip (deflate) of three members in a fixed order with a fixed date:
`meta.json` (format, shapes), `volume.npy` (float16 [C, D, H, W]) and `masks.npy`
(uint8, the bool masks [A, D, H, W] bit-packed along W). Same tensors => same bytes.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FORMAT = "medconcept-fvlm-tensors/1"
AXES = "zyx"            # the model's (D, H, W) are NIfTI's (z, y, x)
MASK_POOLING = "any"    # a grid voxel belongs to an anatomy when any source voxel under it does
_DATE = (1980, 1, 1, 0, 0, 0)   # the earliest date zip can hold: no clock reaches the file
_MEMBERS = ("meta.json", "volume.npy", "masks.npy")
# deflate level 1: CT noise leaves float16 HU channels barely compressible (level 6 saved
# 1 % at 4x the time on 120 x 160 x 160 x 3), while the packed masks still shrink 100-fold
_LEVEL = 1


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3   # unix, whatever the writing platform
    return info


def write_study_tensors(path: Path | str, volume: np.ndarray, masks: np.ndarray) -> None:
    """Write volume (float16 [C, D, H, W]) and masks (bool [A, D, H, W]) to `path`."""
    volume, masks = np.asarray(volume), np.asarray(masks)
    if volume.dtype != np.float16 or volume.ndim != 4:
        raise ValueError(f"volume must be float16 [C, D, H, W], got {volume.dtype} {volume.shape}")
    if masks.dtype != np.bool_ or masks.ndim != 4:
        raise ValueError(f"masks must be bool [A, D, H, W], got {masks.dtype} {masks.shape}")
    if masks.shape[1:] != volume.shape[1:]:
        raise ValueError(f"masks grid {masks.shape[1:]} differs from the volume grid {volume.shape[1:]}")
    meta = {"format": FORMAT, "volume_shape": list(volume.shape), "masks_shape": list(masks.shape),
            "masks_packing": "np.packbits, axis -1, big bit order"}
    payload = {"meta.json": json.dumps(meta, sort_keys=True).encode(),
               "volume.npy": _npy_bytes(volume),
               "masks.npy": _npy_bytes(np.packbits(masks, axis=-1))}
    with zipfile.ZipFile(path, "w") as archive:
        for name in _MEMBERS:
            archive.writestr(_member(name), payload[name], compresslevel=_LEVEL)


def read_study_tensors(path: Path | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(volume float16 [C, D, H, W], masks bool [A, D, H, W]) as write_study_tensors wrote them."""
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("meta.json"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        volume = np.load(io.BytesIO(archive.read("volume.npy")), allow_pickle=False)
        packed = np.load(io.BytesIO(archive.read("masks.npy")), allow_pickle=False)
    shape = tuple(meta["masks_shape"])
    masks = np.unpackbits(packed, axis=-1, count=shape[-1]).astype(bool).reshape(shape)
    if tuple(volume.shape) != tuple(meta["volume_shape"]) or volume.dtype != np.float16:
        raise ValueError(f"{path}: volume {volume.dtype} {volume.shape} does not match its meta.json")
    return torch.from_numpy(volume), torch.from_numpy(masks)


def nifti_array(img) -> np.ndarray:
    """A loaded NIfTI image's array, (x, y, z): float32 for float data, the (scaled) stored
    values otherwise (ct_convert's int16 HU, segment's uint8 label ids)."""
    if img.get_data_dtype().kind == "f":
        return img.get_fdata(dtype="float32")
    return np.asarray(img.dataobj)


def load_nifti(path: Path | str) -> np.ndarray:
    import nibabel as nib

    return nifti_array(nib.load(str(path)))


def volume_channels(hu_xyz: np.ndarray, size: tuple[int, int, int],
                    hu_windows: list[tuple[float, float]]) -> torch.Tensor:
    """float32 [C, D, H, W] in [-1, 1], one channel per HU window, trilinear on the grid.

    One window at a time: the source volume is the large array, its channels never all
    exist at once (interpolation treats channels independently, so the values are the same).
    """
    vol = torch.from_numpy(np.asarray(hu_xyz)).float().permute(2, 1, 0).contiguous()
    channels = []
    for lo, hi in hu_windows:
        window = vol.clamp(lo, hi)
        window.sub_(lo).div_(hi - lo).mul_(2).sub_(1)
        channels.append(F.interpolate(window[None, None], size=tuple(size), mode="trilinear",
                                      align_corners=False)[0, 0])
        del window
    return torch.stack(channels)


def _pool_windows(n: int, out: int) -> list[tuple[int, int]]:
    """Adaptive pooling's windows along one axis: [floor(i * n / out), ceil((i + 1) * n / out))."""
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


def _or_pool_axis(bits: np.ndarray, axis: int, out: int) -> np.ndarray:
    """Bitwise OR over adaptive pooling's windows along one axis of a C-ordered array."""
    n = bits.shape[axis]
    if n == out:
        return bits
    windows = _pool_windows(n, out)
    if axis == bits.ndim - 1 and n >= out:
        # the contiguous axis: one reduceat over the window starts and ends (every other
        # result is a window; the last window runs to the end of the axis)
        bounds = [v for start, stop in windows[:-1] for v in (start, stop)] + [windows[-1][0]]
        return np.ascontiguousarray(np.bitwise_or.reduceat(bits, bounds, axis=axis)[..., ::2])
    shape = list(bits.shape)
    shape[axis] = out
    pooled = np.empty(shape, dtype=bits.dtype)
    lead = (slice(None),) * axis
    for i, (start, stop) in enumerate(windows):
        np.bitwise_or.reduce(bits[lead + (slice(start, stop),)], axis=axis, out=pooled[lead + (i,)])
    return pooled


def _anatomy_bits(labels: np.ndarray, id_sets: list[list[int]]) -> tuple[np.ndarray, np.dtype]:
    """Per voxel, one bit per anatomy (at most 64) set when its label is one of the anatomy's ids."""
    dtype = np.dtype(np.uint8 if len(id_sets) <= 8 else np.uint16 if len(id_sets) <= 16
                     else np.uint32 if len(id_sets) <= 32 else np.uint64)
    if labels.dtype.kind == "f":
        labels = np.trunc(labels).astype(np.int64)   # as torch's .long() of a float label map
    if labels.dtype in (np.uint8, np.uint16):        # every value indexes a full table: no range checks
        top = np.iinfo(labels.dtype).max
    else:
        top = max([i for ids in id_sets for i in ids if i >= 0], default=0)
    lut = np.zeros(top + 1, dtype=dtype)
    for a, ids in enumerate(id_sets):
        for i in ids:
            if 0 <= i <= top:
                lut[i] |= dtype.type(1) << dtype.type(a)
    if labels.dtype in (np.uint8, np.uint16):
        return lut[labels], dtype
    wide = labels.astype(np.int64, copy=False)
    inside = (wide >= 0) & (wide <= top)
    return np.where(inside, lut[np.clip(wide, 0, top)], dtype.type(0)), dtype


def anatomy_masks(labels_xyz: np.ndarray, anatomy_labels: dict[str, list[int]], anatomies: list[str],
                  size: tuple[int, int, int]) -> torch.Tensor:
    """bool [A, D, H, W]: a grid voxel is set when any label voxel under it (adaptive max
    pooling's windows) has one of the anatomy's ids, so small organs survive; an anatomy
    without ids stays empty.

    Up to 64 anatomies share one bit field per voxel, pooled by a separable bitwise OR: one
    pass over the label map for all of them rather than one per anatomy.
    """
    labels_xyz = np.asarray(labels_xyz)
    size = tuple(int(v) for v in size)
    masks = np.zeros((len(anatomies), *size), dtype=bool)
    for first in range(0, len(anatomies), 64):
        group = list(anatomies[first:first + 64])
        id_sets = [[int(i) for i in (anatomy_labels.get(name) or [])] for name in group]
        if not any(id_sets):
            continue
        bits, dtype = _anatomy_bits(labels_xyz, id_sets)
        # (x, y, z) -> (z, y, x): NIfTI arrays are Fortran-ordered, so this is C order
        bits = np.ascontiguousarray(bits.transpose(2, 1, 0))
        for axis in range(3):   # OR is separable over the box: one axis at a time, z first
            bits = _or_pool_axis(bits, axis, size[axis])
        for a in range(len(group)):
            masks[first + a] = (bits & (dtype.type(1) << dtype.type(a))) != 0
    return torch.from_numpy(masks)


def tensors_for(volume_path: Path | str, labels_path: Path | str, anatomy_labels: dict[str, list[int]],
                anatomies: list[str], size: tuple[int, int, int],
                hu_windows: list[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(volume float32 [C, D, H, W] in [-1, 1], masks bool [A, D, H, W]) on the model grid
    (D, H, W) = NIfTI's (z, y, x), from a HU volume and its label map. Raises ValueError
    when their shapes differ. Store the volume as float16 (`.half().numpy()`)."""
    hu_windows = [(float(lo), float(hi)) for lo, hi in hu_windows]
    lab = load_nifti(labels_path)
    vol = load_nifti(volume_path)
    if tuple(vol.shape) != tuple(lab.shape):
        raise ValueError(f"volume {tuple(vol.shape)} and labels {tuple(lab.shape)} differ")
    masks = anatomy_masks(lab, anatomy_labels, list(anatomies), size)
    del lab
    return volume_channels(vol, size, hu_windows), masks
