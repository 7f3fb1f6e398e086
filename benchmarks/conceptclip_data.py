"""Peak memory of ConceptCLIP's image path, streamed from the shards against the in-memory
cache, over N figures generated into a temporary folder (as the figures stage writes them).

    python benchmarks/conceptclip_data.py [--n 200 2000] [--image-size 224] [--workers 0] [--epochs 2]

Each (mode, N) runs in its own process: it builds the dataset from the shards (index,
records, tokens) and reads every figure through a DataLoader for --epochs epochs. Peak
RSS is of that process and its loader workers; growth is the peak less the RSS before the
dataset was built; the pickled dataset's size per figure is what the index costs (what a
spawned loader worker receives). Writes benchmarks/results/conceptclip_data.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import PeakRSS, write_result  # noqa: E402

WORDS = ("axial chest ct shows right pleural effusion nodule left lower lobe consolidation mri brain "
         "lesion enhancement ultrasound liver cyst arrow panel").split()


def make_figures(folder: Path, n: int, per_shard: int = 500) -> None:
    """n photo-like JPEGs (about 512 x 384, smooth gradients and noise) and a figures table."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from tasks.figures.shards import shard_name, write_shard

    rng = np.random.default_rng(0)
    shards, rows = folder / "shards", []
    y, x = np.mgrid[0:384, 0:512]
    for first in range(0, n, per_shard):
        samples = []
        for i in range(first, min(n, first + per_shard)):
            base = (x * (1 + i % 5) + y * (1 + i % 3)) % 256
            pixels = np.stack([base, (base + 80) % 256, 255 - base], -1) + rng.normal(0, 12, (384, 512, 3))
            buf = io.BytesIO()
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=85)
            key = f"PMC{i:07d}_fig1"
            samples.append((key, buf.getvalue(), {}))
            caption = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(30)).capitalize() + "."
            rows.append({"key": key, "pmcid": f"PMC{i:07d}", "caption": caption, "subcaptions": [],
                         "sha256": key})
        write_shard(shards / shard_name(first // per_shard), samples)
    pq.write_table(pa.Table.from_pylist(rows), folder / "figures.parquet")


def rss() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def measure(folder: Path, cache: bool, image_size: int, workers: int, epochs: int) -> dict:
    """One run in this process (called through --child)."""
    import torch

    from models.text_encoder import TextTokenizer
    from tasks.training import conceptclip_data as cd
    from tasks.training import conceptclip_records as records_of
    from tasks.training.loop import _Items

    torch.set_num_threads(1)
    before = rss()
    with PeakRSS(0.05) as peak:
        index = cd.index_shards(folder / "shards")
        records, _ = records_of.load_records(folder / "figures.parquet", None, None, index, 0.0, "bench")
        tokenizer = TextTokenizer.train([r.caption for r in records], 2000, 128)
        dataset = cd.FigureDataset(records, index, tokenizer, {}, image_size, {"crop_scale": [0.75, 1.0]},
                                   seed=0, cache_images=cache)
        del index
        built = rss()
        index_bytes = len(pickle.dumps(dataset))  # what a spawned loader worker receives
        seconds = []
        for epoch in range(epochs):
            plan = [[(i, epoch) for i in range(s, min(len(dataset), s + 32))] for s in range(0, len(dataset), 32)]
            loader = torch.utils.data.DataLoader(_Items(dataset), batch_sampler=plan, collate_fn=cd.collate,
                                                 num_workers=workers)
            start = time.perf_counter()
            for _ in loader:
                pass
            seconds.append(round(time.perf_counter() - start, 2))
    return {"figures": len(dataset), "rss_before_mb": round(before / 2**20, 1),
            "rss_after_index_mb": round(built / 2**20, 1),
            "pickled_dataset_bytes_per_figure": round(index_bytes / len(dataset), 1),
            "peak_rss_total_mb": round(peak.peak_total / 2**20, 1),
            "peak_growth_mb": round((peak.peak_total - before) / 2**20, 1),
            "epoch_seconds": seconds,
            "figures_per_s_last_epoch": round(len(dataset) / seconds[-1], 1) if seconds[-1] else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, mode = args.child
        print(json.dumps(measure(Path(folder), mode == "cached", args.image_size, args.workers, args.epochs)))
        return
    runs = {}
    with tempfile.TemporaryDirectory(prefix="conceptclip-data-") as tmp:
        for n in args.n:
            folder = Path(tmp) / f"n{n}"
            make_figures(folder, n)
            for mode in ("streamed", "cached"):
                cmd = [sys.executable, __file__, "--child", str(folder), mode, "--image-size", str(args.image_size),
                       "--workers", str(args.workers), "--epochs", str(args.epochs)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs[f"{mode}_n{n}"] = json.loads(out.strip().splitlines()[-1])
    small, large = min(args.n), max(args.n)
    result = {
        "what": "ConceptCLIP image path: peak RSS streamed from shards vs in-memory cache",
        "image_size": args.image_size, "cache_side_px": 2 * args.image_size, "loader_workers": args.workers,
        "epochs": args.epochs, "cpu_count": os.cpu_count(), "runs": runs,
    }
    for mode in ("streamed", "cached"):
        result[f"{mode}_peak_rss_ratio_n{large}_vs_n{small}"] = round(
            runs[f"{mode}_n{large}"]["peak_rss_total_mb"] / runs[f"{mode}_n{small}"]["peak_rss_total_mb"], 3)
    write_result("conceptclip_data", result)


if __name__ == "__main__":
    main()
