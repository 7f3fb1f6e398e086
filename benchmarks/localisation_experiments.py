"""Do ConceptCLIP's patch-concept maps localise? The tiny preset trained under variant settings
on the pipeline's inputs, each scored on the VALIDATION figures' drawn findings (pointing game,
map AUC) beside a centre prior and the untrained architecture. The test split is never read
here: it is evaluate's, scored once.

    python benchmarks/localisation_experiments.py [--data data] [--truth ...] [--variants a,b]
        [--out benchmarks/results/localisation_experiments.json] [--work /tmp/loc_exp]

Each variant is deep-merged into params.yaml's train_conceptclip section (model overrides under
`model`); results are merged into --out by variant name, so variants can run one at a time.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tasks.training.common import deep_merge  # noqa: E402

GRID8 = {"image": {"patch_size": 8}}  # 64 px / 8 px: an 8x8 patch grid
LOCAL = {"image": {"patch_size": 8, "attention_window": 1}}
OWN = {"image": {"patch_size": 8, "attention_window": 0}}
# name -> (what it tests, overrides of train_conceptclip)
VARIANTS = {
    "baseline": ("the committed tiny preset", {}),
    "grid4_window1": ("4x4 grid, patches attend within 1 cell", {"model": {"image": {"attention_window": 1}}}),
    "grid8": ("8x8 patch grid (patch 8 px)", {"model": GRID8}),
    "grid8_lse": ("8x8 grid, PC-Align log-mean-exp pool", {"model": {**GRID8, "pc_align_pool": "lse"}}),
    "grid8_mean": ("8x8 grid, PC-Align mean pool", {"model": {**GRID8, "pc_align_pool": "mean"}}),
    "grid8_noaug": ("8x8 grid, no crop/colour augmentation", {"model": GRID8, "augment": {"enabled": False}}),
    "grid8_pc0.25": ("8x8 grid, PC-Align weight 0.25", {"model": {**GRID8, "pc_align_weight": 0.25}}),
    "grid8_window1": ("8x8 grid, patches attend within 1 cell", {"model": LOCAL}),
    "grid8_window0": ("8x8 grid, patches attend to themselves only", {"model": OWN}),
    "grid8_window0_lse": ("8x8 grid, window 0, lse pool", {"model": {**OWN, "pc_align_pool": "lse"}}),
    "grid8_window0_noaug": ("8x8 grid, window 0, no augmentation", {"model": OWN, "augment": {"enabled": False}}),
    "grid8_window0_lse_noaug": ("8x8 grid, window 0, lse pool, no augmentation",
                                {"model": {**OWN, "pc_align_pool": "lse"}, "augment": {"enabled": False}}),
    "grid8_window0_pc2": ("8x8 grid, window 0, PC-Align weight 2", {"model": {**OWN, "pc_align_weight": 2.0}}),
    "grid8_window1_lse": ("8x8 grid, window 1, lse pool", {"model": {**LOCAL, "pc_align_pool": "lse"}}),
    "grid8_window1_noaug": ("8x8 grid, window 1, no augmentation", {"model": LOCAL, "augment": {"enabled": False}}),
    "grid8_window1_pc2": ("8x8 grid, window 1, PC-Align weight 2", {"model": {**LOCAL, "pc_align_weight": 2.0}}),
    "grid8_window1_600": ("8x8 grid, window 1, 600 steps", {"model": LOCAL, "max_steps": 600}),
    # PC-Align's initial bias (SigLIP's -10 leaves its negatives without a gradient at first)
    "pcbias0": ("the tiny preset, PC-Align bias starting at 0", {"model": {"init_concept_logit_bias": 0.0}}),
    "pcbias-5": ("the tiny preset, PC-Align bias starting at -5", {"model": {"init_concept_logit_bias": -5.0}}),
    "pcbias0_max": ("the tiny preset, PC-Align bias 0, max pool",
                    {"model": {"init_concept_logit_bias": 0.0, "pc_align_pool": "max"}}),
    "pcbias0_global": ("the tiny preset, PC-Align bias 0, global attention",
                       {"model": {"init_concept_logit_bias": 0.0, "image": {"attention_window": None}}}),
    "pcbias0_600": ("the tiny preset, PC-Align bias 0, 600 steps", {"model": {"init_concept_logit_bias": 0.0},
                                                                      "max_steps": 600}),
    "pcbias0_pc2": ("the tiny preset, PC-Align bias 0, PC-Align weight 2",
                    {"model": {"init_concept_logit_bias": 0.0, "pc_align_weight": 2.0}}),
    "pcbias0_grid4": ("4x4 grid, global attention, max pool (the old preset), PC-Align bias 0",
                      {"model": {"init_concept_logit_bias": 0.0, "pc_align_pool": "max",
                                 "image": {"patch_size": 16, "attention_window": None}}}),
}


def figures_of_kinds(figures: str, truth: Path, kinds: set[str], work: Path) -> str:
    """figures.parquet less the figures the sample did not draw as one of `kinds`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    drawn = set()
    with open(truth, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("kind") in kinds:
                drawn.add(f"{row['pmcid']}/{row['fig_id']}")
    table = pq.read_table(figures)
    ids = pc.binary_join_element_wise(table["pmcid"], table["figure_id"], "/")
    work.mkdir(parents=True, exist_ok=True)
    out = work / "figures.parquet"
    pq.write_table(table.filter(pc.is_in(ids, value_set=pa.array(sorted(drawn), pa.string()))), out)
    return str(out)


def section_for(params: dict, data: Path, work: Path, overrides: dict) -> dict:
    cfg = deep_merge(params["train_conceptclip"], overrides)
    cfg.update(figures=str(data / "figures/figures.parquet"), shards_dir=str(data / "figures/shards"),
               caption_concepts=str(data / "link_concepts/caption_concepts.parquet"),
               mentions=str(data / "link_concepts/mentions.parquet"), output_dir=str(work / "out"),
               checkpoint_dir=None)
    return cfg


def validation_localisation(model, prep, params: dict, truth: Path, concepts_table: Path, min_fraction: float,
                            n_boot: int) -> dict:
    """Pointing game and map AUC of the validation figures' drawn findings, scored as evaluate
    scores the test figures (conceptclip_eval.score_region_maps)."""
    from tasks.evaluate import localisation
    from tasks.evaluate.conceptclip_eval import concept_names, prompts_for, score_region_maps
    from tasks.training import conceptclip_records as records_of
    from tasks.training.splits import TRAIN, VALIDATION

    val = [r for r in prep.records if r.split == VALIDATION]
    keys = {r.key: i for i, r in enumerate(val)}
    regions, skipped = localisation.read_regions(truth, prep.cfg["figures"], set(keys))
    names = concept_names(concepts_table)
    surface = records_of.surface_forms(prep.cfg["mentions"], records_of.mention_keys([r for r in prep.records if r.split == TRAIN]))
    cuis = sorted({r.cui for r in regions})
    templates = list(params["evaluate"]["conceptclip_tuning"]["prompt_templates"][0])
    ids, mask = prompts_for([(c, surface.get(c, names.get(c, c))) for c in cuis], templates, prep.tokenizer)
    figures = sorted({keys[r.key] for r in regions})
    row = {i: k for k, i in enumerate(figures)}
    images = torch.stack([prep.validation.image(i, -1) for i in figures])
    image = prep.model_cfg["image"]
    grid = int(image["image_size"]) // int(image["patch_size"])
    # "large" is a share of the image, the same regions at every grid
    out, _ = score_region_maps(model, prep.model_cfg, images, regions,
                               [(row[keys[r.key]], cuis.index(r.cui)) for r in regions], (ids, mask, len(templates)),
                               min_fraction * grid * grid, n_boot, 0)
    return {**out, "skipped": skipped, "min_region_fraction": min_fraction}


def brief(loc: dict) -> dict:
    def part(name):
        s = next(v for k, v in loc.items() if k == name or (name == "large" and k.startswith("at_least_")))
        return {"regions": s["regions"], **{m: {k: (None if s[m][k]["value"] is None else round(s[m][k]["value"], 3))
                                                 for k in ("pointing_game", "map_auc")}
                                             for m in ("conceptclip", "centre_prior", "untrained")}}
    return {"all": part("all"), "large": part("large")}


def main(argv=None) -> int:
    from tasks.common.params import load_params
    from tasks.training import conceptclip_stage as stage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data", help="folder holding figures/ and link_concepts/")
    ap.add_argument("--truth", type=Path, default=None, help="default: <data>/sample/truth/figures.jsonl")
    ap.add_argument("--concepts-table", type=Path, default=None, help="default: <data>/umls_index/concepts.parquet")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--min-fraction", type=float, default=2 / 64, help="share of the image a 'large' region covers")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("/tmp/localisation_experiments"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/localisation_experiments.json")
    ap.add_argument("--kinds", default=None,
                    help="train and validate on these drawn kinds only (comma-separated, e.g. ct_chest): "
                         "a batch's negatives then share the finding's body part and modality")
    args = ap.parse_args(argv)
    truth = args.truth or args.data / "sample/truth/figures.jsonl"
    table = args.concepts_table or args.data / "umls_index/concepts.parquet"
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("variants", {})
    results["setup"] = {"split": "validation", "min_region_fraction": args.min_fraction, "bootstrap": args.bootstrap,
                        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                        "note": "large = regions covering at least min_region_fraction of the letterboxed image "
                                "(2 patches of an 8x8 grid); pointing game and map AUC on validation only"}
    params = load_params(REPO / "params.yaml")
    for name in [v for v in args.variants.split(",") if v]:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
        what, overrides = VARIANTS[name]
        run = copy.deepcopy(params)
        run["train_conceptclip"] = section_for(params, args.data, args.work / name, overrides)
        if args.kinds:
            run["train_conceptclip"]["figures"] = figures_of_kinds(run["train_conceptclip"]["figures"], truth,
                                                                   set(args.kinds.split(",")), args.work / name)
            name = f"{name}@{args.kinds}"
        prep = stage.prepare(run)
        started = time.monotonic()
        result = stage.train(prep, log=lambda line: None)
        seconds = time.monotonic() - started
        loc = validation_localisation(result.model, prep, run, truth, table, args.min_fraction, args.bootstrap)
        results["variants"][name] = {"what": what, "overrides": overrides, "train_seconds": round(seconds, 1),
                                     "validation_loss_end": round(result.curve[-1]["validation_loss"], 3),
                                     "grid": loc["grid"], **brief(loc), "per_concept": loc["per_concept"]}
        print(name, json.dumps({"train_s": round(seconds, 1), **brief(loc)}), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
