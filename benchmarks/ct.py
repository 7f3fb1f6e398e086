"""ct_convert benchmark: DICOM series -> NIfTI, against dicom2nifti on the same series.

    python benchmarks/ct.py [--slices 600] [--size 512] [--real ../shared/data/ct/totalsegmentator/example_ct_dicom]

Each conversion runs in a fresh process (one core's worth of work: both converters
are single-threaded), which reports its CPU time and its own peak RSS
(getrusage ru_maxrss). Throughput = slices / CPU second ("per core"), and the ratio
ours / dicom2nifti. Peak RSS is compared with the volume's int16 size (target <= 3x).
Writes benchmarks/results/ct.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_synthetic_series(folder: Path, n_slices: int, size: int) -> Path:
    """An uncompressed 16-bit CT series with shuffled file names (as PACS exports have)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((xx - size / 2) / (0.45 * size)) ** 2 + ((yy - size / 2) / (0.35 * size)) ** 2 <= 1
    series_uid, study_uid = generate_uid(entropy_srcs=["bench-series"]), generate_uid(entropy_srcs=["bench-study"])
    order = rng.permutation(n_slices)
    for k in range(n_slices):
        ds = Dataset()
        ds.PatientID, ds.PatientName, ds.StudyInstanceUID, ds.SeriesInstanceUID = "BENCH1", "BENCH^X", study_uid, series_uid
        ds.Modality, ds.SOPClassUID = "CT", CTImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench", str(k)])
        ds.ImagePositionPatient = ["-250", "-250", f"{-600 + 1.0 * k:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.9765625", "0.9765625"]
        ds.SliceThickness = "1"
        ds.InstanceNumber = k + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        img = np.where(body, 1064 + rng.integers(-30, 30, (size, size)), 24).astype(np.uint16)
        ds.PixelData = img.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
        ds.save_as(folder / f"IM{order[k]:06d}", enforce_file_format=True)
    return folder


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(kind: str, series_dir: str, out_dir: str) -> dict:
    """Convert one series in this process; report CPU seconds and RSS."""
    if kind == "ours":
        from tasks.ct.convert import Rejection, convert_dicom_series, discover
        from tasks.ct.dicom_series import group_series, scan_files
        from tasks.schema.ct import CtConvertParams
    else:
        import dicom2nifti
        import dicom2nifti.settings  # noqa: F401
    import_rss = _rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if kind == "ours":
        files, _ = discover(series_dir)
        headers, _ = scan_files(files, root=series_dir)
        (series,) = group_series(headers)
        cfg = {**CtConvertParams().model_dump(), "source_paths": "hashed"}  # the schema's defaults
        row = convert_dicom_series(series, cfg, "bench-key", out_dir, series_dir)
        if isinstance(row, Rejection):
            raise SystemExit(f"rejected: {row}")
        n = row["shape_z"]
    else:
        result = dicom2nifti.dicom_series_to_nifti(series_dir, str(Path(out_dir) / "d2n.nii.gz"), reorient_nifti=True)
        n = result["NII"].shape[2]
    return {"kind": kind, "slices": int(n), "cpu_s": time.process_time() - cpu0,
            "wall_s": time.perf_counter() - wall0, "import_rss_mb": import_rss, "peak_rss_mb": _rss_mb()}


def run_worker(kind: str, series_dir: Path, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, str(series_dir), str(out_dir)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(series_dir: Path, work: Path, repeats: int) -> dict:
    runs = {"ours": [], "dicom2nifti": []}
    for r in range(repeats):
        for kind in runs:  # interleaved so load changes hit both alike
            runs[kind].append(run_worker(kind, series_dir, work / f"{kind}{r}"))
    best = {k: min(v, key=lambda x: x["cpu_s"]) for k, v in runs.items()}
    rate = {k: best[k]["slices"] / best[k]["cpu_s"] for k in best}
    return {
        "slices": best["ours"]["slices"],
        "ours_slices_per_cpu_s": round(rate["ours"], 2),
        "dicom2nifti_slices_per_cpu_s": round(rate["dicom2nifti"], 2),
        "ratio_vs_dicom2nifti": round(rate["ours"] / rate["dicom2nifti"], 3),
        "ours_wall_s": round(best["ours"]["wall_s"], 3),
        "dicom2nifti_wall_s": round(best["dicom2nifti"]["wall_s"], 3),
        "ours_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["ours"]), 1),
        "ours_import_rss_mb": round(best["ours"]["import_rss_mb"], 1),
        "dicom2nifti_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["dicom2nifti"]), 1),
        "repeats": repeats,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "ct" / "totalsegmentator"
                                              / "example_ct_dicom"))
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "SERIES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return {}
    from benchmarks._measure import write_result

    work = Path(tempfile.mkdtemp(prefix="ct_bench_"))
    try:
        series = write_synthetic_series(work / "series", args.slices, args.size)
        synthetic = compare(series, work / "out", args.repeats)
        int16_mb = args.size * args.size * args.slices * 2 / 2**20
        synthetic["volume_int16_mb"] = round(int16_mb, 1)
        synthetic["ours_peak_rss_over_int16"] = round(synthetic["ours_peak_rss_mb"] / int16_mb, 3)
        synthetic["ours_peak_rss_over_int16_excl_imports"] = round(
            (synthetic["ours_peak_rss_mb"] - synthetic["ours_import_rss_mb"]) / int16_mb, 3)
        result = {"synthetic_uncompressed": {"shape": [args.size, args.size, args.slices], **synthetic},
                  "cpu_count": os.cpu_count(),
                  "targets": {"ratio_vs_dicom2nifti": ">= 1.0", "peak_rss_over_int16": "<= 3.0"}}
        if Path(args.real).is_dir():
            result["real_jpeg2000_example_ct_dicom"] = compare(Path(args.real), work / "real", args.repeats)
        return json.loads(write_result("ct", result).read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
