"""umls_index on a full-size synthetic UMLS release, beside QuickUMLS's own installer on the same files.

    python benchmarks/umls_index.py [--rows 10000000 ...] [--workdir DIR] [--skip-installer]

For each size: a release from benchmarks/make_umls_release.py (made once, kept in
--workdir), then, one after the other, each as a subprocess on the same files:
- the peer: QuickUMLS's installer script (`python -m quickumls.install META DEST -L -U -d
  unqlite -E ENG`; its spaCy-model check skipped, tasks/linking/quickumls_adapter.py);
- ours: the umls_index stage as `python -m flows.umls_index` with params.yaml (its own
  Prefect server and Dask cluster included), pointed at the release.
Measured per run: wall seconds; CPU seconds of the whole process tree; peak RSS of the
tree (summed RSS, sampled every 0.2 s); the terms each index holds. Goals: peak RSS
<= 4 GB, wall time <= 1.5x the peer's. The two indexes differ by design: the stage also
drops suppressed rows (QuickUMLS's installer keeps them).
--skip-installer runs ours only (the peer takes the longest and the most memory): the JSON
then has no time ratio. Writes benchmarks/results/umls_index.json; the largest size's index
stays in <workdir>/<rows>/index for benchmarks/link.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flows  # noqa: E402,F401  (offline defaults, inherited by the subprocesses)
from benchmarks._measure import TreeSampler, write_result  # noqa: E402
from benchmarks.make_umls_release import write_release  # noqa: E402
from tasks.linking.quickumls_adapter import installer_command  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GB = 2**30


class CommandSampler(TreeSampler):
    """Peak summed RSS and CPU seconds of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(interval, pid)
        self.peak = 0
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, start time) -> user + sys seconds
        self.peak_of: dict[tuple[int, float], tuple[int, str]] = {}  # -> (peak RSS, what it runs)
        self.at_peak: list[tuple[int, str]] = []  # (RSS, what it runs) of each process when the tree peaked

    def sample(self, processes):
        total = 0
        now = []
        for proc in processes:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                    self.cpu[key] = times.user + times.system
                    cmd = " ".join(proc.cmdline())[:80]
                    if rss > self.peak_of.get(key, (0, ""))[0]:
                        self.peak_of[key] = (rss, cmd)
                    total += rss
                    now.append((rss, cmd))
            except psutil.Error:
                continue
        if total > self.peak:
            self.peak, self.at_peak = total, now


def measured(cmd: list[str], log: Path) -> dict:
    """Run cmd to completion; wall, CPU and peak RSS of its process tree."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        with CommandSampler(proc.pid) as tree:
            code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{cmd[:3]}... exited {code}; see {log}")
    biggest = sorted(((rss, tree.cpu[key], cmd) for key, (rss, cmd) in tree.peak_of.items()), reverse=True)[:5]
    return {"wall_s": round(wall, 1), "cpu_s": round(sum(tree.cpu.values()), 1),
            "peak_rss_gb": round(tree.peak / GB, 3),
            "largest_processes": [{"peak_rss_gb": round(rss / GB, 3), "cpu_s": round(cpu, 1), "cmd": cmd}
                                  for rss, cpu, cmd in biggest],
            "at_tree_peak": [{"rss_gb": round(rss / GB, 3), "cmd": cmd}
                             for rss, cmd in sorted(tree.at_peak, reverse=True)[:5]]}


def simstring_terms(qu_dir: Path) -> int:
    """The number of strings in a QuickUMLS simstring database, from its master file's header
    (magic, byte order, version, size, char size, n, begin/end marks, entries, max length)."""
    with open(qu_dir / "umls-simstring.db" / "umls-terms.simstring", "rb") as handle:
        header = handle.read(36)
    return struct.unpack("<I", header[28:32])[0]


def run_size(rows: int, work: Path, seed: int, with_installer: bool = True) -> dict:
    release = work / f"{rows}"
    meta = release / "META"
    if not (meta / "MRSTY.RRF").is_file() or not (release / "SemGroups.txt").is_file():
        start = time.perf_counter()
        made = write_release(release, rows, seed)
        print(f"[umls_index bench] release of {rows:,} rows in {time.perf_counter() - start:.0f}s: {made}", flush=True)
    peer_dir, ours_dir = release / "quickumls_installer", release / "index"
    for folder in (peer_dir, ours_dir):
        shutil.rmtree(folder, ignore_errors=True)
    peer = None
    if with_installer:
        peer_dir.mkdir()  # the installer asks before it creates or empties a folder
        peer = measured(installer_command(meta, peer_dir), release / "peer.log")
        print(f"[umls_index bench] {rows:,} rows, QuickUMLS installer: {peer}", flush=True)
        shutil.rmtree(peer_dir / "cui-semtypes.db", ignore_errors=True)  # disk: keep its simstring header only
    ours = measured([sys.executable, "-m", "flows.umls_index", "-S", f"umls_index.meta_dir={meta}",
                     "-S", f"umls_index.semantic_groups={release / 'SemGroups.txt'}",
                     "-S", f"umls_index.output_dir={ours_dir}"], release / "umls_index.log")
    print(f"[umls_index bench] {rows:,} rows, umls_index stage: {ours}", flush=True)
    ours["terms"] = simstring_terms(ours_dir / "quickumls")
    result = {"mrconso_rows": rows, "mrconso_bytes": (meta / "MRCONSO.RRF").stat().st_size,
              "quickumls_installer": peer or "not run (--skip-installer)", "umls_index": ours,
              "goals": {"peak_rss_le_4gb": ours["peak_rss_gb"] <= 4.0}, "index_dir": str(ours_dir)}
    if peer is not None:
        peer["terms"] = simstring_terms(peer_dir)
        shutil.rmtree(peer_dir, ignore_errors=True)
        result["time_ratio_ours_over_installer"] = round(ours["wall_s"] / peer["wall_s"], 3)
        result["cpu_ratio_ours_over_installer"] = round(ours["cpu_s"] / peer["cpu_s"], 3)
        result["goals"]["time_le_1_5x_installer"] = ours["wall_s"] <= 1.5 * peer["wall_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medconcept_umls_bench"))
    parser.add_argument("--skip-installer", action="store_true",
                        help="run the umls_index stage only, not QuickUMLS's installer beside it")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = [run_size(rows, args.workdir, args.seed, not args.skip_installer) for rows in args.rows]
    result = {"runs": runs, "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
              "note": "peer = QuickUMLS's installer script on the same files; ours = the umls_index stage "
                      "(Prefect + Dask LocalCluster of params.yaml); CPU and RSS summed over each process tree"}
    if len(runs) > 1 and not args.skip_installer:  # growth between the two largest sizes
        a, b = runs[-2], runs[-1]
        scale = b["mrconso_rows"] / a["mrconso_rows"]
        result["scaling"] = {
            "rows_factor": round(scale, 2),
            "ours_wall_factor": round(b["umls_index"]["wall_s"] / a["umls_index"]["wall_s"], 2),
            "ours_rss_factor": round(b["umls_index"]["peak_rss_gb"] / a["umls_index"]["peak_rss_gb"], 2),
            "installer_wall_factor": round(b["quickumls_installer"]["wall_s"] / a["quickumls_installer"]["wall_s"], 2),
            "installer_rss_factor": round(b["quickumls_installer"]["peak_rss_gb"]
                                          / a["quickumls_installer"]["peak_rss_gb"], 2),
        }
    write_result("umls_index", result)


if __name__ == "__main__":
    main()
