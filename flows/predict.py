"""`medconcept predict` / `python -m flows.predict`: a trained model folder on one's own data.

    python -m flows.predict MODEL_DIR INPUT [INPUT ...] --out DIR [options]

A ConceptCLIP folder (train_conceptclip's output_dir) takes image files or folders of images:
per image, each candidate concept's scores (JSON) and a PNG with the top maps. An fVLM folder
(train_fvlm's) takes a DICOM series folder or a NIfTI file: ct_convert's conversion and checks,
anatomy masks, training's preprocessing, per-anatomy finding probabilities (JSON + overlay PNG).
Interactive inference on a few inputs: it runs in this process, without Prefect or Dask.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tasks.predict.model_folder import NotAModelFolder, read_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medconcept predict", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="a train_conceptclip or train_fvlm output folder")
    p.add_argument("inputs", nargs="+", help="images or image folders (ConceptCLIP); a DICOM folder or NIfTI (fVLM)")
    p.add_argument("--out", required=True, help="folder for the JSON and PNG outputs (created)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    c = p.add_argument_group("ConceptCLIP")
    c.add_argument("--concepts", nargs="*", default=None,
                   help="candidate concepts, CUIs or names (default: the concepts the model was trained on)")
    c.add_argument("--concepts-file", help="a text file with one candidate (CUI or name) per line")
    c.add_argument("--concepts-table", help="umls_index's concepts.parquet: names of CUIs the model did not train on")
    c.add_argument("--tuned-by", help="evaluate's conceptclip folder: use the prompts and patch weight it chose on "
                                      "validation (default: the training stage's zero_shot settings)")
    c.add_argument("--patch-weight", type=float, help="score = (1 - w) global + w local (overrides --tuned-by)")
    c.add_argument("--template", action="append", help="prompt template with {name} (repeatable)")
    c.add_argument("--wording", choices=["surface", "preferred"], help="trained concepts' words in prompts")
    c.add_argument("--top-maps", type=int, default=3, help="maps drawn per image")
    c.add_argument("--keep-names", action="store_true",
                   help="name outputs by the input's file name (default: by its content hash, no names leak)")
    f = p.add_argument_group("fVLM")
    f.add_argument("--mask", help="an anatomy label NIfTI on the CT's grid (instead of running TotalSegmentator)")
    f.add_argument("--mask-labels", help="JSON file {label value: anatomy name} for --mask (default: the "
                                         "segment stage's TotalSegmentator label names)")
    f.add_argument("--segment-device", default="cpu", help="TotalSegmentator's device (cpu, cuda/gpu, mps)")
    f.add_argument("--finding-names", help="split_reports' anatomy_texts.parquet (or a JSON {finding key: name}): "
                                           "the finding names evaluate puts in its prompts (default: the keys' words); "
                                           "--tuned-by takes evaluate's fvlm folder for its chosen prompt pair")
    return p


def conceptclip_wording(config: dict, args) -> "Wording":
    from tasks.predict.annotate import Wording

    zero_shot = config["zero_shot"]
    templates, weight, wording = ("{name}",), float(zero_shot["patch_weight"]), "surface"
    if args.tuned_by:
        detail = Path(args.tuned_by) / "metrics_detail.json"
        if not detail.is_file():
            raise ValueError(f"--tuned-by {args.tuned_by}: no metrics_detail.json (evaluate's conceptclip folder)")
        chosen = json.loads(detail.read_text(encoding="utf-8"))["tuning"]["chosen"]
        templates, weight, wording = tuple(chosen["prompt_templates"]), float(chosen["patch_weight"]), \
            chosen["prompt_wording"]
    if args.template:
        bad = [t for t in args.template if "{name}" not in t]
        if bad:
            raise ValueError(f"--template {bad[0]!r}: a template must contain {{name}}")
        templates = tuple(args.template)
    if args.patch_weight is not None:
        weight = args.patch_weight
    return Wording(templates=templates, patch_weight=weight, top_k=int(zero_shot["top_k"]),
                   wording=args.wording or wording)


def run(args) -> dict:
    import torch

    from tasks.predict.model_folder import open_model

    path, kind, _ = read_config(args.model_dir)
    if kind == "conceptclip":  # a CT given to an image model: an error before any weight is read
        from tasks.predict.ct_input import refuse_ct_for_images

        refuse_ct_for_images(args.inputs)
    folder = open_model(path)
    folder.model.to(torch.device(args.device))
    if kind == "conceptclip":
        from tasks.predict.annotate import resolve_candidates
        from tasks.predict.image_predict import predict_images

        given = list(args.concepts or [])
        if args.concepts_file:
            given += [line.strip() for line in Path(args.concepts_file).read_text(encoding="utf-8").splitlines()
                      if line.strip()]
        names = {}
        if args.concepts_table:
            from tasks.evaluate.conceptclip_eval import concept_names

            names = concept_names(args.concepts_table)
        how = conceptclip_wording(folder.config, args)
        candidates = resolve_candidates(given or None, folder.config, how.wording, names)
        return predict_images(folder, args.inputs, args.out, candidates, how, args.top_maps, args.keep_names)
    from tasks.predict.ct_predict import predict_ct

    if len(args.inputs) != 1:
        raise ValueError(f"an fVLM model scores one CT at a time (a DICOM series folder or a NIfTI), "
                         f"{len(args.inputs)} inputs were given")
    return predict_ct(folder, args.inputs[0], args.out, mask=args.mask, mask_labels=args.mask_labels,
                      segment_device=args.segment_device, tuned_by=args.tuned_by, finding_names=args.finding_names)


def main(argv=None) -> int:
    import flows  # noqa: F401  (offline defaults)

    args = parser().parse_args(argv)
    try:
        summary = run(args)
    except (NotAModelFolder, ValueError, FileNotFoundError) as exc:
        print(f"medconcept predict: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k not in ("images",)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
