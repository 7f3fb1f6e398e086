"""Incremental update cost: `dvc repro` of ingest -> figures -> link_concepts after new packages.

    nice -n 19 python benchmarks/update.py --n 10000 --new 100 --versions 10

Builds an N-package corpus with the sample's generators (tasks/sample: JATS, PDF and JPEG
figures), listed in an OA file list, in a throwaway copy of this working tree (git + DVC),
and runs `dvc repro link_concepts` there (the full run). Then a newer OA file list adds
`--new` packages and `--versions` newer versions of existing PMCIDs (a revised title and
caption, a later Last Updated, another package path): the update `dvc repro`. A second copy runs the same command
from scratch over the union. Reports the update's wall time as a fraction of the full run
(goal <= 5 %), how many items each stage processed (its timing.json), and whether every
output byte matches the from-scratch run. Then the **floor**, in the same run: the three stages
forced to run again (`dvc repro --force --single-item ingest figures link_concepts`) with nothing
new, every cache entry warm: what an update costs before it does any work (stage processes,
whole-table passes, DVC's bookkeeping); it must leave every output byte as it was. Writes
benchmarks/results/update.json.

`--placement end` (default) gives the new articles PMCIDs above the corpus's, as PMC assigns
them (a monthly update is mostly new, higher PMCIDs plus revisions of older ones); `spread`
puts them between the existing ones, the worst case for a layout set by PMCIDs (every shard
touched). `--prefect shared` (default) runs every repro as `python -m flows.with_prefect dvc
repro` (what `./medconcept.sh run` runs): one Prefect server for all (this process's), and
one Dask cluster per repro shared by its stages; `per-stage` runs a bare `dvc repro`, each
stage process starting its own temporary server (about 5 s a stage on 2 cores) and its own
Dask workers.

Articles are drawn from a pool of `--pool` distinct sample articles, each package under its own
PMCID (the nxml relabelled, as benchmarks/ingest.py does), so the corpus costs seconds per
thousand packages to write while every package is processed in full by every stage.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._measure import write_result  # noqa: E402

BASE = 20_000_000            # corpus PMCIDs: BASE + 2 i; new ones from BASE + 2 N up, or odd numbers between
OA_COLUMNS = ["File", "Article Citation", "Accession ID", "Last Updated", "PMID", "License"]
STAGES = ("ingest", "figures", "link_concepts")
VOLATILE = {"timing.json"}   # the run record (seconds, items processed), not an output (not DVC-tracked)


def _pool_members(size: int) -> list[list[tuple[str, bytes]]]:
    from tasks.common.params import load_params
    from tasks.sample.articles import build_article, folder_name, package_members

    params = load_params(REPO / "params.yaml", [])
    pool = []
    for index in range(size):
        article, images, sizes = build_article(params, index)
        pool.append(package_members(article, images, sizes, folder_name(article, index), with_thumbnails=False))
    return pool


def _relabel(members: list[tuple[str, bytes]], pmcid: str, revised: bool) -> list[tuple[str, bytes]]:
    out = []
    for path, data in members:
        if path.endswith(".nxml"):
            data = re.sub(rb'(<article-id pub-id-type="pmc">)\d+', rb"\g<1>" + pmcid[3:].encode(), data)
            if revised:  # a corrected title and first caption: every stage has new work for it
                data = data.replace(b"</article-title>", b" (revised)</article-title>", 1)
                data = re.sub(rb"(<caption>.*?<p>)", rb"\g<1>Revised. ", data, count=1, flags=re.S)
        out.append((path, data))
    return out


def _write_packages(job: tuple[Path, list[tuple[str, bytes]], list[tuple[str, str, bool]]]) -> list[dict]:
    from tasks.sample.packages import tar_gz

    root, members, wanted = job
    rows = []
    for pmcid, relpath, revised in wanted:
        target = root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tar_gz(_relabel(members, pmcid, revised)))
        rows.append({"File": relpath, "Article Citation": "J Synth Radiol. 2024; 1:1", "Accession ID": pmcid,
                     "Last Updated": "2025-06-01 10:00:00" if revised else "2024-01-01 10:00:00",
                     "PMID": "", "License": "CC BY"})
    return rows


def make_packages(root: Path, pool: list, wanted: list[tuple[str, str, bool]], workers: int) -> list[dict]:
    """wanted: (pmcid, relative path, revised); package i uses pool article i % len(pool)."""
    jobs: dict[int, list] = {}
    for i, item in enumerate(wanted):
        jobs.setdefault(int(item[0][3:]) % len(pool), []).append(item)
    with ProcessPoolExecutor(workers) as executor:
        parts = executor.map(_write_packages, [(root, pool[k], v) for k, v in sorted(jobs.items())])
        return sorted((row for part in parts for row in part), key=lambda r: r["File"])


def write_list(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=OA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["File"]))


def _relpath(pmcid: str, version: int = 1) -> str:
    digest = hashlib.sha256(pmcid.encode()).hexdigest()
    return f"oa_package/{digest[:2]}/{digest[2:4]}/{pmcid}{'' if version == 1 else f'.v{version}'}.tar.gz"


def make_repo(dest: Path, workers: int) -> Path:
    """A copy of this working tree (tracked and untracked, not ignored files) as a git + DVC repo."""
    import yaml

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["sample"]["parts"] = ["vocabulary"]          # the UMLS-format vocabulary for umls_index only
    params["ingest"]["source"] = "data/corpus/oa_file_list.csv"
    params["dask"].update(n_workers=workers, threads_per_worker=1, processes=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@example.org", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


def _env() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("MEDCONCEPT_DASK_ADDRESS", None)
    return env


def repro(repo: Path, target: str = "link_concepts", *options: str) -> tuple[float, str]:
    """`dvc repro [options] target`; with a shared Prefect server, under flows.with_prefect as
    `./medconcept.sh run` runs it (its stages then share one Dask cluster too)."""
    command = [sys.executable, "-m", "dvc", "repro", *options, *target.split()]
    if os.environ.get("PREFECT_API_URL"):
        command = [sys.executable, "-m", "flows.with_prefect", *command]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"dvc repro {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def prepare_vocabulary(repo: Path) -> None:
    """The sample stage's vocabulary only (the other sample parts are not needed here), recorded
    with `dvc commit`, then the UMLS index the linker reads."""
    subprocess.run([sys.executable, "-m", "flows.sample"], cwd=repo, env=_env(), check=True, capture_output=True)
    for name in ("pmc", "truth", "ct", "reports"):
        (repo / "data" / "sample" / name).mkdir(parents=True, exist_ok=True)
        (repo / "data" / "sample" / name / ".keep").write_text("not built by this benchmark\n")
    subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "sample"], cwd=repo, env=_env(), check=True,
                   capture_output=True)
    repro(repo, "umls_index")


def output_hashes(repo: Path) -> dict[str, str]:
    hashes = {}
    for stage in STAGES:
        for path in sorted((repo / "data" / stage).rglob("*")):
            if path.is_file() and path.name not in VOLATILE:
                hashes[path.relative_to(repo).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def processed(repo: Path) -> dict:
    out = {}
    for stage in STAGES:
        timing = json.loads((repo / "data" / stage / "timing.json").read_text())
        out[stage] = {"seconds": timing["seconds"], **timing.get("incremental", {})}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--pool", type=int, default=200, help="distinct sample articles the packages copy")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the throwaway repositories")
    parser.add_argument("--placement", choices=("end", "spread"), default="end",
                        help="new PMCIDs above the corpus (as PMC assigns them) or between its PMCIDs")
    parser.add_argument("--prefect", choices=("shared", "per-stage"), default="shared",
                        help="one Prefect server for every stage process, or one per stage process")
    args = parser.parse_args()
    if args.prefect == "shared":  # exported: every dvc repro below, and its stages, inherit it
        import flows  # noqa: F401  (offline Prefect defaults)
        from flows._runtime import ensure_prefect_api

        ensure_prefect_api()
    else:
        os.environ.pop("PREFECT_API_URL", None)
    work = Path(tempfile.mkdtemp(prefix="update-bench-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        pool = _pool_members(min(args.pool, args.n))
        corpus = [f"PMC{BASE + 2 * i}" for i in range(args.n)]
        step = max(1, args.n // max(args.new, 1))
        new = ([f"PMC{BASE + 2 * args.n + i}" for i in range(args.new)] if args.placement == "end" else
               [f"PMC{BASE + 2 * i + 1}" for i in range(0, args.n, step)][: args.new])
        revised = corpus[step // 2:: step][: args.versions]
        incremental, scratch = (make_repo(Path(tempfile.mkdtemp(dir=work)), args.workers) for _ in range(2))
        packages = incremental / "data" / "corpus"
        rows = make_packages(packages, pool, [(p, _relpath(p), False) for p in corpus], args.workers)
        write_list(packages / "oa_file_list.csv", rows)
        generate_s = time.perf_counter() - t0
        for repo in (incremental, scratch):
            prepare_vocabulary(repo)
        full_s, _ = repro(incremental)
        full_processed = processed(incremental)
        rows += make_packages(packages, pool, [(p, _relpath(p), False) for p in new]
                              + [(p, _relpath(p, 2), True) for p in revised], args.workers)
        write_list(packages / "oa_file_list.csv", rows)
        update_s, update_out = repro(incremental)
        update_processed = processed(incremental)
        ours = output_hashes(incremental)
        # the floor: the same three stages forced to run again with nothing new (every cache
        # entry warm): process starts, whole-table passes and DVC's own bookkeeping
        floor_s, _ = repro(incremental, " ".join(STAGES), "--force", "--single-item")
        floor_processed = processed(incremental)
        floor_changed = sorted(k for k, v in output_hashes(incremental).items() if ours.get(k) != v)
        summary = json.loads((incremental / "data" / "ingest" / "summary.json").read_text())
        shutil.copytree(packages, scratch / "data" / "corpus", copy_function=os.link)  # the same files
        shutil.rmtree(incremental)  # two corpora with their DVC caches would not fit on a work disk
        scratch_s, _ = repro(scratch)
        theirs = output_hashes(scratch)
        differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        result = {
            "benchmark": "update", "n": args.n, "new": len(new), "newer_versions": len(revised),
            "pool": len(pool), "workers": args.workers, "placement": args.placement, "prefect": args.prefect,
            "generate_seconds": round(generate_s, 1),
            "full_repro_seconds": round(full_s, 1), "update_repro_seconds": round(update_s, 1),
            "scratch_repro_seconds": round(scratch_s, 1),
            "update_fraction_of_full": round(update_s / full_s, 4),
            "floor_repro_seconds": round(floor_s, 1),
            "floor_fraction_of_full": round(floor_s / full_s, 4),
            "update_above_floor_fraction_of_full": round((update_s - floor_s) / full_s, 4),
            "processed_floor": floor_processed,
            "floor_outputs_changed": floor_changed,
            # seconds the three stages spent inside their runs (timing.json) and the rest of the
            # repro: process start, Prefect server, Dask cluster, DVC hashing (does not grow with work)
            "full_inside_stages_seconds": round(sum(v["seconds"] for v in full_processed.values()), 1),
            "update_inside_stages_seconds": round(sum(v["seconds"] for v in update_processed.values()), 1),
            "update_fraction_of_scratch_union": round(update_s / scratch_s, 4),
            "stages_run_in_update": [s for s in STAGES if f"Running stage '{s}'" in update_out],
            "processed_full": full_processed, "processed_update": update_processed,
            "ingest_summary": {k: summary.get(k) for k in ("items_in", "items_out", "rejected", "rejected_by_reason")},
            "outputs_compared": len(ours), "outputs_differing": differing,
            "byte_identical_to_scratch": not differing and bool(ours),
            "targets": {"update_fraction_of_full": 0.05},
            "command": " ".join(["python", "benchmarks/update.py", *sys.argv[1:]]),
        }
        write_result("update", result)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
