"""A small untrained fVLM model folder written by train_fvlm's own `write_outputs`, so its
config.json, tokenizer and lineage.json are shaped as a trained run leaves them (for predict
tests: the weights need not be good, only loadable and deterministic)."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import REPO_ROOT, stage_params

SMALL_CT = "{ct: {volume_size: [16, 32, 32], patch_size: [4, 8, 8], stem_channels: [8, 16], drop_path: 0.0}}"
TEXTS = ["Lung shows no significant abnormality.", "Lung nodule in the lung.", "Liver mass in the liver.",
         "Heart shows no significant abnormality.", "Cardiomegaly in the heart.", "Kidney: renal cyst.",
         "Spleen shows no significant abnormality.", "Pleural effusion in the lung.", "No emphysema in the lung."]


def write_tiny_fvlm(out: Path, anatomies: list[str], findings: list[str], seed: int = 0,
                    conversion: dict | None = None, **overrides) -> Path:
    """train_fvlm's output folder at `out` for an untrained model over `anatomies` and `findings`;
    `conversion`: a ct_convert cfg whose settings the training studies were converted with (written
    as ct_convert writes them; None: a studies table without them); `overrides`: more `-S` params
    (e.g. train_fvlm.drop_fov_cut=false, which lineage.json records)."""
    from tasks.ct.conversion_settings import write_conversion_settings
    from models import build_model
    from tasks.training import fvlm_stage
    from tasks.training import fvlm_tensors
    from tasks.training.common import resolve
    from tasks.training.loop import LoopResult
    from tasks.training.text_tower import text_tower

    out = Path(out)
    studies_dir = out.parent / "ct_convert"  # not the checkout's data/: a pipeline run there must not leak in
    studies_dir.mkdir(parents=True, exist_ok=True)
    if conversion is not None:
        write_conversion_settings(conversion, studies_dir)
    params = stage_params(REPO_ROOT, **{"train_fvlm.studies": str(studies_dir / "studies.parquet"),"train_fvlm.anatomies": "[" + ", ".join(anatomies) + "]",
                                        "train_fvlm.model": SMALL_CT,
                                        "train_fvlm.tokenizer": "{vocab_size: 200, hf_folder: null}",
                                        "train_fvlm.output_dir": str(out),
                                        "train_fvlm.checkpoint_dir": str(out / "checkpoints"), **overrides})
    params = {**params, "train_fvlm": {**params["train_fvlm"], **fvlm_stage.other_sections(params)}}
    cfg, model_cfg = resolve(params, fvlm_stage.STAGE, REPO_ROOT)
    tokenizer = text_tower(cfg, model_cfg, TEXTS, REPO_ROOT)
    model_cfg["anatomies"] = fvlm_stage.anatomy_list(cfg)
    model_cfg["ct"]["in_chans"] = len(cfg["hu_windows"])
    for key in ("skip_all_normal", "anatomy_reduction"):
        model_cfg[key] = cfg[key]
    torch.manual_seed(seed)
    model = build_model(model_cfg).eval()
    counts = {"items_in": 0, "train_studies": 0, "validation_studies": 0, "train_pairs": 0, "validation_pairs": 0,
              "studies_with_volume": 0, "studies_with_report": 0, "studies_paired": 0}
    prep = fvlm_stage.Prepared(cfg, model_cfg, tokenizer, None, None, [], [], {f: i for i, f in
                                                                               enumerate(sorted(findings))},
                               "untrained", counts, {"axes": fvlm_tensors.AXES, "mask_pooling": fvlm_tensors.MASK_POOLING})
    result = LoopResult(model=model, curve=[], steps=0, resumed_from=0, seconds=0.0, samples_seen=0)
    fvlm_stage.write_outputs(prep, result, params)
    return out


def write_tiny_conceptclip(out: Path) -> Path:
    """An untrained ConceptCLIP folder as train_conceptclip lays it out (config, weights, tokenizer)."""
    import json

    from models import build_model
    from models.text_encoder import TextTokenizer
    from tasks.training import conceptclip_data as cd
    from tasks.training.outputs import write_model

    tokenizer = TextTokenizer.train(TEXTS, 80, 32)
    cfg = json.loads((REPO_ROOT / "models/configs/conceptclip_tiny.json").read_text())
    cfg["text"]["vocab_size"] = tokenizer.vocab_size
    torch.manual_seed(0)
    concepts = [{"cui": "C0032227", "preferred_name": "Pleural effusion", "surface": "pleural effusion"}]
    config = {"model": cfg, "concept_ids": {"C0032227": 0}, "concepts": concepts,
              "preprocess": {"image_size": cfg["image"]["image_size"], "mean": cd.MEAN, "std": cd.STD,
                             "letterbox": True,
                             "source_image": {"max_side": 1024, "jpeg_quality": 90, "max_pixels": 178956970}},
              "zero_shot": {"patch_weight": 0.5, "top_k": 3}, "preset": "tiny"}
    write_model(Path(out), build_model(cfg), config, tokenizer)
    return Path(out)
