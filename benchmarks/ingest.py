"""Ingest at scale: throughput against a floor, and memory that stays flat as K and packages grow.

    nice -n 19 python benchmarks/ingest.py --k 1000 10000 100000 --template lean

For each K, K copies of the real PMC package under new PMCIDs are ingested on `--workers`
Dask worker processes, and in the same run a **floor** reads the same packages on as many
plain processes: open each with tarfile, read every member, hash the file (no parsing, no
writing). Reported per K: wall time, ingest / floor time (goal <= 2), and peak RSS of each
Dask worker, of this (flow) process and of the whole tree; the largest K is compared with
K = 1,000 (goal: within 10 %). Then the **package-size check**: the same small corpus once
with a plain package and once with that package carrying a large dropped member (a `.mp4`
of `--big-member-mb` MB, streamed while written): the worker peak must not grow by its size.

Templates: `article` keeps the JATS, PDF, figures and licence (570 kB a copy); `lean` keeps
the JATS, licence and small GIFs (50 kB), so that 100,000 copies, their staging tars and
shards fit on a work disk. Each copy is two gzip members, its own JATS first and then the
shared rest compressed once: a valid .tar.gz that every reader decompresses in full, but
written in a fraction of the time. Writes benchmarks/results/<--name>.json.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import multiprocessing
import os
import re
import resource
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flows  # noqa: E402,F401  (offline Prefect defaults)
from benchmarks._measure import TreeSampler, write_result  # noqa: E402
from flows._runtime import ensure_prefect_api  # noqa: E402
from flows._stage import run_stage  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from tasks.common.params import load_params  # noqa: E402

SUPPLEMENTARY = re.compile(r"\.s\d{3}\.")
TEMPLATES = {
    "article": lambda name: not SUPPLEMENTARY.search(name),
    "lean": lambda name: name.endswith((".nxml", ".gif", "license.txt")),
}
MB = 1e6


# ---- inputs -------------------------------------------------------------------------------

def _member(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """One member as tar bytes: header block(s), data, padding to the block size."""
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return header + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


class Template:
    """The real package cut in two: its folder entry and JATS (rewritten per copy), and the
    rest of its kept members with the end-of-archive blocks, gzip-compressed once."""

    def __init__(self, package: Path, keep):
        with tarfile.open(package) as tar:
            members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar if keep(m.name)
                       or m.isdir()]
        # The JATS goes right after the folder entry, so that only that part differs per copy.
        self.head = [(m, d) for m, d in members if m.isdir()]
        self.nxml_info, self.nxml = next((m, d) for m, d in members if m.name.endswith(".nxml"))
        self.pmc = re.search(rb'<article-id pub-id-type="pmc">(\d+)</article-id>', self.nxml).group(1)
        self.rest = [(m, d) for m, d in members if m.isfile() and m is not self.nxml_info]
        self.tail_gz = gzip.compress(b"".join(_member(m, d) for m, d in self.rest) + b"\0" * 1024,
                                     compresslevel=6, mtime=0)
        self.kept_bytes = len(self.nxml) + sum(len(d) for _, d in self.rest)

    def copy(self, pmc_digits: bytes) -> bytes:
        nxml = self.nxml.replace(b'pub-id-type="pmc">' + self.pmc, b'pub-id-type="pmc">' + pmc_digits)
        info = tarfile.TarInfo(self.nxml_info.name)
        info.size = len(nxml)
        head = b"".join(_member(m, d) for m, d in self.head) + _member(info, nxml)
        return gzip.compress(head, compresslevel=6, mtime=0) + self.tail_gz


def make_copies(template: Template, out: Path, k: int) -> list[Path]:
    paths = []
    for i in range(k):
        folder = out / f"{i % 256:02x}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"PMC{80_000_000 + i}.tar.gz"
        path.write_bytes(template.copy(b"%d" % (80_000_000 + i)))
        paths.append(path)
    return paths


def write_with_big_member(template: Template, path: Path, pmc_digits: bytes, size: int) -> None:
    """A copy whose package also holds `size` bytes of movie, streamed into the gzip."""
    nxml = template.nxml.replace(b'pub-id-type="pmc">' + template.pmc, b'pub-id-type="pmc">' + pmc_digits)
    top = template.nxml_info.name.split("/", 1)[0]
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [*template.head, (template.nxml_info, nxml), *template.rest]:
            info = tarfile.TarInfo(info.name) if info.isfile() else info
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
        movie = tarfile.TarInfo(f"{top}/movie.s009.mp4")
        movie.size = size
        tar.addfile(movie, _Zeros(size))


class _Zeros:
    def __init__(self, size: int):
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


# ---- measuring ----------------------------------------------------------------------------

class RolePeaks(TreeSampler):
    """Peak RSS per process role: this flow process, each Dask worker, the Prefect server, the tree."""

    def __init__(self, interval: float = 0.1):
        super().__init__(interval)
        self.peaks, self.tree = {}, 0

    @staticmethod
    def _role(proc: psutil.Process, me: int) -> str:
        if proc.pid == me:
            return "flow"
        cmd = " ".join(proc.cmdline())
        if "resource_tracker" in cmd:
            return "other"
        if "spawn_main" in cmd or "forkserver" in cmd:
            return "worker"
        return "prefect_server" if "prefect" in cmd or "uvicorn" in cmd else "other"

    def sample(self, processes):
        total = 0
        for proc in processes:
            try:
                rss, role = proc.memory_info().rss, self._role(proc, self.root.pid)
            except psutil.Error:
                continue
            total += rss
            self.peaks[role] = max(self.peaks.get(role, 0), rss)  # workers: the largest one
        self.tree = max(self.tree, total)

    def as_mb(self) -> dict:
        return {f"peak_rss_{role}_mb": round(v / MB, 1) for role, v in sorted(self.peaks.items())} | {
            "peak_rss_tree_mb": round(self.tree / MB, 1)}


def _floor_chunk(paths: list[str]) -> int:
    """The floor: open each package with tarfile, read every member, hash the file."""
    read = 0
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read()
        hashlib.sha256(data).hexdigest()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if member.isfile():
                    read += len(tar.extractfile(member).read())
    return read


def _ready(_: int) -> int:
    time.sleep(0.2)  # holds this process so that every worker of the pool starts
    return os.getpid()


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def floor(paths: list[Path], workers: int) -> tuple[float, float]:
    """(wall, CPU seconds) of the floor over `paths` on `workers` processes started beforehand
    (their start-up, which imports this module, is not the floor's work)."""
    chunks = [[str(p) for p in paths[i: i + 250]] for i in range(0, len(paths), 250)]
    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        procs = [psutil.Process(pid) for pid in set(pool.map(_ready, range(workers), chunksize=1))]
        cpu, start = _cpu(procs), time.perf_counter()
        sum(pool.imap_unordered(_floor_chunk, chunks))
        return time.perf_counter() - start, _cpu(procs) - cpu
    finally:
        pool.close()
        pool.join()


def _own_and_reaped_cpu() -> float:
    """CPU seconds of this process and of its children that have ended (Dask workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _server_procs() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if RolePeaks._role(p, me.pid) == "prefect_server"]


def ingest(source: Path, out: Path, workers: int, *overrides: str) -> tuple[dict, float, float, RolePeaks]:
    """(summary, wall, CPU seconds of the flow, its Dask workers and the Prefect server, peaks)."""
    params = load_params("params.yaml", [
        f"ingest.source={source}", f"ingest.output_dir={out}", f"dask.n_workers={workers}",
        "dask.threads_per_worker=1", "dask.processes=true", *overrides])
    server = _server_procs()
    cpu = _own_and_reaped_cpu() + _cpu(server)
    start = time.perf_counter()
    with RolePeaks() as peaks:
        summary = run_stage(ingest_flow, params)
    seconds = time.perf_counter() - start
    return summary, seconds, _own_and_reaped_cpu() + _cpu(server) - cpu, peaks


# ---- runs ---------------------------------------------------------------------------------

def run_k(template: Template, k: int, workers: int, workdir: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"ingest-bench-{k}-", dir=workdir))
    try:
        start = time.perf_counter()
        paths = make_copies(template, work / "in", k)
        made = time.perf_counter() - start
        floor_s, floor_cpu = floor(paths, workers)
        summary, seconds, cpu, peaks = ingest(work / "in", work / "out", workers)
        assert summary["items_out"] == k, summary
        run = {
            "k": k, "workers": workers, "generate_s": round(made, 1), "seconds": round(seconds, 2),
            "floor_seconds": round(floor_s, 2), "ingest_over_floor": round(seconds / floor_s, 2),
            "cpu_seconds": round(cpu, 2), "floor_cpu_seconds": round(floor_cpu, 2),
            "ingest_over_floor_cpu": round(cpu / floor_cpu, 2),
            "packages_per_s": round(k / seconds, 1), "packages_per_s_per_core": round(k / seconds / workers, 1),
            "input_mb": round(sum(p.stat().st_size for p in paths) / MB, 1),
            "shards_mb": round(sum(p.stat().st_size for p in (work / "out" / "shards").iterdir()) / MB, 1),
            **peaks.as_mb(),
        }
        print(run, flush=True)
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)


def big_member_check(template: Template, workers: int, size_mb: int, workdir: Path | None) -> dict:
    """Peak worker RSS with and without one package holding a large dropped member."""
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-member-", dir=workdir))
    size = size_mb * 1_000_000
    caps = [f"ingest.max_member_bytes={2 * size}", f"ingest.max_package_bytes={4 * size}"]
    try:
        runs = {}
        for case in ("plain", "big_member"):
            folder = work / case
            make_copies(template, folder, 20)
            big = folder / "big" / "PMC89999999.tar.gz"
            big.parent.mkdir()
            if case == "plain":
                big.write_bytes(template.copy(b"89999999"))
            else:
                write_with_big_member(template, big, b"89999999", size)
            summary, seconds, _, peaks = ingest(folder, work / f"out-{case}", workers, *caps)
            assert summary["items_out"] == 21, summary
            runs[case] = {"seconds": round(seconds, 2), "package_mb": round(big.stat().st_size / MB, 2), **peaks.as_mb()}
            print(case, runs[case], flush=True)
        grow = runs["big_member"]["peak_rss_worker_mb"] - runs["plain"]["peak_rss_worker_mb"]
        return {"member_mb": size_mb, "runs": runs, "worker_peak_growth_mb": round(grow, 1),
                "growth_over_member_size": round(grow / size_mb, 3), "target_growth_over_member_size_max": 0.1}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=Path("../shared/data/pmc/packages/pmc2924383.tar.gz"))
    parser.add_argument("--k", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--template", choices=sorted(TEMPLATES), default="article")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--big-member-mb", type=int, default=500, help="0: skip the package-size check")
    parser.add_argument("--name", default="ingest", help="result file name under benchmarks/results/")
    args = parser.parse_args()
    template = Template(args.package, TEMPLATES[args.template])
    ensure_prefect_api()
    started = time.perf_counter()
    runs = [run_k(template, k, args.workers, args.workdir) for k in args.k]
    result = {
        "benchmark": "ingest", "package": args.package.name, "template": args.template,
        "kept_kb_per_package": round(template.kept_bytes / 1e3, 1), "cpu_count": os.cpu_count(), "runs": runs,
        "targets": {"ingest_over_floor_max": 2.0, "rss_growth_max": 0.10},
    }
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        result["rss_growth"] = {role: round(last[key] / first[key] - 1, 3) for role, key in
                                [("worker", "peak_rss_worker_mb"), ("flow", "peak_rss_flow_mb"),
                                 ("tree", "peak_rss_tree_mb")] if first.get(key) and last.get(key)}
        result["rss_growth_between_k"] = [first["k"], last["k"]]
    if args.big_member_mb:
        result["package_size_check"] = big_member_check(template, args.workers, args.big_member_mb, args.workdir)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    write_result(args.name, result)


if __name__ == "__main__":
    main()
