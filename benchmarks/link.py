"""Concept-linking throughput: the linker vs bare QuickUMLS `match`, same captions, same index.

    python benchmarks/link.py --data ../shared/data [--n 5000] [--index-dir DIR]

Index: --index-dir (a umls_index output, e.g. the full-size synthetic one that
benchmarks/umls_index.py leaves in <workdir>/<rows>/index), or by default the MeSH 2017
descriptors (built once into /tmp). Captions: ROCO. Both loops run in this one process
on one core: the bare loop is QuickUMLS's public `match(text)` on a blank English
tokenizer with the linker's similarity settings; the linker adds scispaCy tokenisation,
sentences, abbreviations, acronyms, variants, filters and the assertion rules. Rates are
captions per CPU-second of this one process (= per core), so other work on shared cores
does not count; wall seconds are reported beside them. The loops alternate in chunks.
Goal: linker time <= 1.1x bare QuickUMLS. Writes benchmarks/results/link.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flows  # noqa: E402,F401  (offline defaults)
from benchmarks._measure import PeakRSS, write_result  # noqa: E402
from tasks.common.params import load_params  # noqa: E402


def read_roco(root: Path) -> list[str]:
    captions = []
    for path in sorted(root.glob("data/*/*/captions.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            _, _, text = line.partition("\t")
            if text.strip():
                captions.append(text.strip())
    return captions


def ensure_index(tree: Path, index_dir: Path) -> Path:
    from tasks.umls.index import build_index
    from tasks.umls.mesh import mesh_to_rrf

    if not (index_dir / "concepts.parquet").is_file():
        umls = load_params(Path(__file__).resolve().parent.parent / "params.yaml")["umls_index"]
        mesh_to_rrf(tree, index_dir / "META", umls["mesh_permute_inverted"])
        build_index(index_dir / "META", index_dir, umls, semantic_groups_file=index_dir / "META" / "SemGroups.txt")
    return index_dir


def timed(fn, texts):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(texts)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MEDCONCEPT_TEST_DATA", "../shared/data"))
    parser.add_argument("--n", type=int, default=0, help="captions (0: all)")
    parser.add_argument("--chunk", type=int, default=500, help="captions per interleaved chunk")
    parser.add_argument("--index-dir", default=None, help="a umls_index output (default: MeSH 2017, built)")
    args = parser.parse_args()
    data = Path(args.data)
    captions = read_roco(data / "captions" / "roco")
    if args.n:
        captions = captions[: args.n]
    if args.index_dir:
        index_dir, index_name = Path(args.index_dir), f"umls_index output {args.index_dir}"
    else:
        index_dir = ensure_index(data / "umls" / "mesh2017" / "2017MeshTree.txt",
                                 Path("/tmp/medconcept_bench_mesh_index"))
        index_name = "MeSH 2017 descriptors"
    p = load_params(Path(__file__).resolve().parent.parent / "params.yaml")["link_concepts"]

    from tasks.common.nlp import make_pipeline
    from tasks.linking import quickumls_adapter as qa
    from tasks.linking.linker import ConceptLinker, open_quickumls

    with PeakRSS() as rss:
        start = time.perf_counter()
        linker = ConceptLinker.from_index(index_dir, p)
        open_s = time.perf_counter() - start
        bare = qa.with_pipeline(open_quickumls(
            index_dir, threshold=float(p["threshold"]), window=int(p["window"]), similarity_name=p["similarity"],
            min_match_length=int(p["min_match_length"]), accepted_semtypes=None,
            overlapping_criteria="length" if p["overlap"] == "length" else "score"),
            make_pipeline(scispacy_tokenizer=False, sentencizer=None))

        def bare_loop(texts):
            return [bare.match(t) for t in texts]

        warm = captions[:200]
        bare_loop(warm), linker.link_many(warm)  # caches, lazy imports
        # Interleaved chunks, alternating which loop goes first: the cores are shared,
        # so both loops see the same background load.
        bare_out, ours_out = [], []
        bare_wall = bare_cpu = ours_wall = ours_cpu = 0.0
        for k, lo in enumerate(range(0, len(captions), args.chunk)):
            chunk = captions[lo: lo + args.chunk]
            order = ("bare", "ours") if k % 2 == 0 else ("ours", "bare")
            for which in order:
                if which == "bare":
                    out, wall, cpu = timed(bare_loop, chunk)
                    bare_out += out
                    bare_wall, bare_cpu = bare_wall + wall, bare_cpu + cpu
                else:
                    out, wall, cpu = timed(linker.link_many, chunk)
                    ours_out += out
                    ours_wall, ours_cpu = ours_wall + wall, ours_cpu + cpu
    n = len(captions)
    result = {
        "captions": n, "index": index_name, "index_concepts": len(linker.concepts),
        "linker_open_seconds": round(open_s, 1),
        "cpu": os.cpu_count(), "settings": {k: p[k] for k in ("threshold", "similarity", "window", "overlap",
                                                               "abbreviations", "acronyms", "variants")},
        "bare_quickumls": {"seconds": round(bare_wall, 2), "cpu_seconds": round(bare_cpu, 2),
                           "captions_per_s_per_core": round(n / bare_cpu, 1),
                           "matches": sum(len(m) for m in bare_out)},
        "linker": {"seconds": round(ours_wall, 2), "cpu_seconds": round(ours_cpu, 2),
                   "captions_per_s_per_core": round(n / ours_cpu, 1),
                   "mentions": sum(len(m) for m in ours_out),
                   "negated": sum(x.negated for m in ours_out for x in m),
                   "uncertain": sum(x.uncertain for m in ours_out for x in m)},
        "time_ratio_linker_over_bare": round(ours_cpu / bare_cpu, 3),
        "goal_time_ratio_le_1_1": ours_cpu <= 1.1 * bare_cpu,
        "peak_rss_mb": round(rss.peak_total / 2**20, 1),  # both loops in one process; spaCy imports torch
        "load_average_1min": round(os.getloadavg()[0], 2),
        "max_rss_mb_getrusage": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    write_result("link", result)


if __name__ == "__main__":
    main()
