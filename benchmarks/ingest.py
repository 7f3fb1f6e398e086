"""Ingest throughput and memory: K copies of the real PMC package under new PMCIDs.

    python benchmarks/ingest.py --package ../shared/data/pmc/packages/pmc2924383.tar.gz --k 1000 10000

Writes benchmarks/results/ingest.json with packages/s per core and peak RSS per K.
Copies keep the article (JATS, PDF, figures, licence) and leave out the
supplementary movie/zip/tif (5 of 6 MB), which ingest drops anyway, so that
10,000 copies fit on a work disk.
"""
from __future__ import annotations

import argparse
import gzip
import io
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flows  # noqa: E402,F401  (offline Prefect defaults)
from benchmarks._measure import PeakRSS, write_result  # noqa: E402
from flows._runtime import ensure_prefect_api  # noqa: E402
from flows._stage import run_stage  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from tasks.common.params import load_params  # noqa: E402

SUPPLEMENTARY = re.compile(r"\.s\d{3}\.")


def read_package(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar
                if not SUPPLEMENTARY.search(m.name)]


def make_copies(template: list, out: Path, k: int) -> None:
    nxml_info, nxml = next((m, d) for m, d in template if m.name.endswith(".nxml"))
    pmc = re.search(rb'<article-id pub-id-type="pmc">(\d+)</article-id>', nxml).group(1)
    for i in range(k):
        new_id = b"%d" % (80_000_000 + i)
        raw = io.BytesIO()
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz, \
                tarfile.open(fileobj=gz, mode="w") as tar:
            for info, data in template:
                if info.name == nxml_info.name:
                    data = nxml.replace(b'pub-id-type="pmc">' + pmc, b'pub-id-type="pmc">' + new_id)
                    info = tarfile.TarInfo(info.name)
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
        folder = out / f"{i % 256:02x}"
        folder.mkdir(exist_ok=True)
        (folder / f"PMC{int(new_id)}.tar.gz").write_bytes(raw.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--package", type=Path, default=Path("../shared/data/pmc/packages/pmc2924383.tar.gz"))
    parser.add_argument("--k", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    template = read_package(args.package)
    ensure_prefect_api()
    runs = []
    for k in args.k:
        work = Path(tempfile.mkdtemp(prefix=f"ingest-bench-{k}-", dir=args.workdir))
        try:
            (work / "in").mkdir()
            make_copies(template, work / "in", k)
            input_bytes = sum(p.stat().st_size for p in (work / "in").rglob("*.tar.gz"))
            params = load_params("params.yaml", [
                f"ingest.source={work / 'in'}", f"ingest.output_dir={work / 'out'}",
                f"dask.n_workers={args.workers}", "dask.threads_per_worker=1", "dask.processes=true",
            ])
            start = time.perf_counter()
            with PeakRSS() as rss:
                summary = run_stage(ingest_flow, params)
            seconds = time.perf_counter() - start
            assert summary["items_out"] == k, summary
            runs.append({
                "k": k, "seconds": round(seconds, 2), "workers": args.workers,
                "packages_per_s": round(k / seconds, 1),
                "packages_per_s_per_core": round(k / seconds / args.workers, 1),
                "input_mb": round(input_bytes / 1e6, 1),
                "peak_rss_tree_mb": round(rss.peak_total / 1e6, 1),
                "peak_rss_single_process_mb": round(rss.peak_single / 1e6, 1),
            })
            print(runs[-1], flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "ingest", "package": args.package.name, "runs": runs,
              "targets": {"packages_per_s_per_core": 20, "rss_growth_max": 0.10}}
    if len(runs) >= 2:
        result["rss_growth_tree"] = round(runs[-1]["peak_rss_tree_mb"] / runs[0]["peak_rss_tree_mb"] - 1, 3)
        result["rss_growth_single"] = round(
            runs[-1]["peak_rss_single_process_mb"] / runs[0]["peak_rss_single_process_mb"] - 1, 3)
    write_result("ingest", result)


if __name__ == "__main__":
    main()
