"""Training throughput: a ConceptCLIP step against open_clip's own SigLIP step of the same
dimensions, in the same run on the same batch; PC-Align's extra cost; an fVLM step.

    python benchmarks/train.py [--steps 8] [--threads 2] [--out benchmarks/results/train.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REF = {"image_size": 112, "patch": 16, "width": 192, "depth": 6, "heads": 3, "context": 64,
       "vocab": 8192, "embed": 192, "batch": 32}


def conceptclip_cfg(r):
    return {
        "model": "conceptclip", "embed_dim": r["embed"], "concept_hidden": r["embed"], "pc_align_weight": 0.5,
        "image": {"image_size": r["image_size"], "patch_size": r["patch"], "width": r["width"], "depth": r["depth"],
                  "heads": r["heads"], "mlp_ratio": 4.0, "pool": "token"},
        "text": {"vocab_size": r["vocab"], "width": r["width"], "depth": r["depth"], "heads": r["heads"],
                 "mlp_ratio": 4.0, "context_length": r["context"]},
    }


def open_clip_model(r):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=r["depth"], width=r["width"], head_width=r["width"] // r["heads"],
                           patch_size=r["patch"], image_size=r["image_size"])
    text = CLIPTextCfg(context_length=r["context"], vocab_size=r["vocab"], width=r["width"], heads=r["heads"],
                       layers=r["depth"])
    return CLIP(r["embed"], vision, text, init_logit_scale=2.302585, init_logit_bias=-10.0, output_dict=True)


def make_batch(r, g):
    b, L = r["batch"], r["context"]
    lengths = torch.randint(L // 2, L, (b,), generator=g)
    ids = torch.randint(5, r["vocab"], (b, L), generator=g)
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    ids = ids * mask
    rows, starts, ends = [], [], []
    for i in range(b):  # 4 concept mentions of 1-3 tokens per caption
        for k in range(4):
            s = 1 + k * 6
            rows.append(i); starts.append(s); ends.append(s + 1 + (k % 3))
    return {
        "images": torch.randn(b, 3, r["image_size"], r["image_size"], generator=g),
        "input_ids": ids, "attention_mask": mask,
        "concept_row": torch.tensor(rows), "concept_start": torch.tensor(starts),
        "concept_end": torch.tensor(ends), "concept_id": torch.randint(0, 64, (len(rows),), generator=g),
    }


def timed_steps(step, n, warmup=2):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds, to share load drift fairly")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/train.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from open_clip.loss import SigLipLoss

    from models import build_model
    from tasks.training.optim import build_optimizer

    r = REF
    g = torch.Generator().manual_seed(0)
    batch = make_batch(r, g)
    torch.manual_seed(0)
    ours = build_model(conceptclip_cfg(r))
    ref = open_clip_model(r)
    opt_ours = build_optimizer(ours, 1e-4, 0.05)
    opt_ref = build_optimizer(ref, 1e-4, 0.05)
    siglip = SigLipLoss()
    text = batch["input_ids"]

    def step_ref():
        out = ref(batch["images"], text)
        loss = siglip(out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"])
        loss.backward(); opt_ref.step(); opt_ref.zero_grad(set_to_none=True)

    def step_ours(pc):
        loss = ours(batch, pc_align=pc)["loss"]
        loss.backward(); opt_ours.step(); opt_ours.zero_grad(set_to_none=True)

    # one step of each in turn, so load from other processes hits all three alike
    variants = {"open_clip": step_ref, "ours_it": lambda: step_ours(False), "ours_it_pc": lambda: step_ours(True)}
    for step in variants.values():
        timed_steps(step, 0, warmup=2)
    t = {k: [] for k in variants}
    for _ in range(args.rounds * args.steps):
        for name, step in variants.items():
            t[name] += timed_steps(step, 1, warmup=0)
    med = {k: statistics.median(v) for k, v in t.items()}
    sps = {k: r["batch"] / v for k, v in med.items()}

    # fVLM: the tiny preset's dimensions, batch 8, 6 anatomies
    fcfg = json.loads((Path(__file__).resolve().parent.parent / "models/configs/fvlm_tiny.json").read_text())
    fcfg["anatomies"] = [f"a{i}" for i in range(6)]
    fcfg["text"]["vocab_size"] = 2048
    fv = build_model(fcfg)
    opt_fv = build_optimizer(fv, 1e-4, 0.05)
    vs = fcfg["ct"]["volume_size"]
    B, A = 8, 6
    masks = torch.zeros(B, A, *vs, dtype=torch.bool)
    for a in range(A):
        masks[:, a, :, (a * vs[1]) // A : ((a + 1) * vs[1]) // A] = True
    L = fcfg["text"]["context_length"]
    fb = {"volumes": torch.randn(B, 1, *vs, generator=g), "masks": masks,
          "usable": torch.ones(B, A, dtype=torch.bool),
          "text_ids": torch.randint(5, 2048, (B * A, L), generator=g), "text_mask": torch.ones(B * A, L, dtype=torch.long),
          "text_index": torch.arange(B * A), "normal": torch.rand(B, A, generator=g) < 0.5,
          "findings": torch.rand(B, A, 4, generator=g) < 0.3}

    def step_fv():
        loss = fv(fb)["loss"]
        loss.backward(); opt_fv.step(); opt_fv.zero_grad(set_to_none=True)

    fv_times = timed_steps(step_fv, args.steps)
    result = {
        "reference_dims": r, "threads": args.threads, "steps_per_round": args.steps, "rounds": args.rounds,
        "median_step_s": {k: round(v, 4) for k, v in med.items()},
        "samples_per_s": {k: round(v, 2) for k, v in sps.items()},
        "ratio_vs_open_clip_without_pc_align": round(sps["ours_it"] / sps["open_clip"], 3),
        "ratio_vs_open_clip_with_pc_align": round(sps["ours_it_pc"] / sps["open_clip"], 3),
        "pc_align_overhead": round(med["ours_it_pc"] / med["ours_it"] - 1, 3),
        "targets": {"ratio_without_pc_align_min": 0.9, "pc_align_overhead_max": 0.25},
        "fvlm_tiny_step_s": round(statistics.median(fv_times), 4),
        "fvlm_batch": B, "fvlm_anatomies": A, "fvlm_volume": vs,
        "torch": torch.__version__, "machine": platform.machine(), "cpu_count": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
