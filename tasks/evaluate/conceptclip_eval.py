"""ConceptCLIP on held-out figures: zero-shot concept AUC, retrieval, PC-Align annotation AUC."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tasks.evaluate.metrics import auc_metrics, bootstrap_ci, recall_at_k
from tasks.training import conceptclip_data as data
from tasks.training.conceptclip_stage import load_records, load_trained
from tasks.training.splits import HELDOUT


@dataclass
class ConceptEval:
    metrics: dict
    labels: np.ndarray  # [N, C] held-out concept truth
    scores: np.ndarray  # [N, C] zero-shot scores
    concepts: list[tuple[str, str]]  # (cui, name)
    records: list
    dataset: object
    model: object
    tokenizer: object
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor


def concept_names(concepts_table: str | Path | None) -> dict[str, str]:
    if not concepts_table or not Path(concepts_table).is_file():
        return {}
    rows = pq.read_table(concepts_table).to_pylist()
    name_key = next((k for k in ("preferred_name", "name", "str") if rows and k in rows[0]), None)
    return {r["cui"]: r[name_key] for r in rows} if name_key else {}


def surface_forms(mentions: str | Path | None, train_keys: set[str]) -> dict[str, str]:
    """Each concept's most frequent affirmed wording in the training captions.

    Prompts use the words the model has read ("CT"), not only UMLS preferred names
    ("X-Ray Computed Tomography"), which may never occur in captions.
    """
    if not mentions or not Path(mentions).is_file():
        return {}
    counts: dict[str, dict[str, int]] = {}
    for m in pq.read_table(mentions, columns=["key", "cui", "text", "negated"]).to_pylist():
        if m["key"] in train_keys and not m["negated"] and m["text"]:
            forms = counts.setdefault(m["cui"], {})
            forms[m["text"].lower()] = forms.get(m["text"].lower(), 0) + 1
    return {cui: sorted(forms.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for cui, forms in counts.items()}


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def prompts_for(concepts: list[tuple[str, str]], templates: list[str], tokenizer):
    texts = [t.format(name=name.lower()) for _, name in concepts for t in templates]
    enc = tokenizer.encode(texts)
    return enc["input_ids"], enc["attention_mask"]


def evaluate(train_dir: str | Path, train_section: dict, concepts_table: str | Path | None, params: dict,
             seed: int = 0) -> ConceptEval:
    model, tokenizer, config = load_trained(train_dir)
    records, _, index = load_records(train_section)
    held = [r for r in records if r.split == HELDOUT]
    if len(held) < 2:
        raise ValueError(f"only {len(held)} held-out figures: nothing to evaluate")
    size = int(config["model"]["image"]["image_size"])
    dataset = data.FigureDataset(held, index, tokenizer, {}, size, augment=None, cache_images=True)

    names = concept_names(concepts_table)
    counts: dict[str, int] = {}
    for r in held:
        for cui in set(r.cuis):
            counts[cui] = counts.get(cui, 0) + 1
    min_pos = int(params["min_positives"])
    concepts = [(cui, names.get(cui, cui)) for cui, c in sorted(counts.items()) if min_pos <= c < len(held)]
    templates = list(params["prompt_templates"])
    wording = surface_forms(train_section["mentions"], {r.key for r in records if r.split != HELDOUT}) \
        if params["prompt_wording"] == "surface" else {}
    zs = train_section["zero_shot"]
    patch_weight, top_k = float(zs["patch_weight"]), int(zs["top_k"])

    images = torch.stack([dataset.image(i, -1) for i in range(len(held))])
    with torch.no_grad():
        img_glob = torch.cat([model.encode_image(images[b], patches=False)[0] for b in _batches(len(held), 64)])
        txt_glob = torch.cat([model.encode_text(dataset.ids[b], dataset.mask[b])[0] for b in _batches(len(held), 64)])
    sim = (img_glob @ txt_glob.t()).numpy()

    labels = np.array([[cui in set(r.cuis) for cui, _ in concepts] for r in held], dtype=int).reshape(len(held), -1)
    zero_shot = np.zeros(labels.shape)
    annotation = np.zeros(labels.shape)
    ids = mask = torch.zeros(0, 2, dtype=torch.long)
    if concepts:
        ids, mask = prompts_for([(cui, wording.get(cui, name)) for cui, name in concepts], templates, tokenizer)
        per_template = len(templates)
        zs_parts, pc_parts = [], []
        for b in _batches(len(held), 64):
            zs_parts.append(model.zero_shot_scores(images[b], ids, mask, patch_weight=patch_weight, top_k=top_k))
            pc_parts.append(model.concept_patch_scores(images[b], ids, mask))
        zero_shot = torch.cat(zs_parts).view(len(held), len(concepts), per_template).mean(-1).numpy()
        annotation = torch.cat(pc_parts).view(len(held), len(concepts), per_template).mean(-1).numpy()

    n_boot, boot_seed = int(params["bootstrap"]["n"]), int(params["bootstrap"]["seed"]) + seed
    # the split unit: figures of one article share authors, style and captions, so an
    # article's figures are resampled together
    articles = [r.pmcid for r in held]
    ks = tuple(int(k) for k in params["retrieval_ks"])
    i2t, t2i = recall_at_k(sim, ks), recall_at_k(sim.T, ks)
    retrieval = {}
    for name, matrix, values in (("image_to_text", sim, i2t), ("text_to_image", sim.T, t2i)):
        for k in ks:
            ci = bootstrap_ci(lambda idx, m=matrix, k=k: recall_at_k(m[np.ix_(idx, idx)], (k,))[f"R@{k}"],
                              articles, n_boot, boot_seed)
            retrieval[f"{name}_R@{k}"] = {"value": values[f"R@{k}"], "ci95": list(ci) if ci else None}
    cui_names = [f"{name} ({cui})" for cui, name in concepts]
    metrics = {
        "heldout_figures": len(held),
        "heldout_articles": len({r.pmcid for r in held}),
        "concepts_evaluated": len(concepts),
        **auc_metrics("zero_shot", labels, zero_shot, cui_names, articles, n_boot, boot_seed),
        **auc_metrics("annotation", labels, annotation, cui_names, articles, n_boot, boot_seed),
        "retrieval": retrieval,
        "interval": "95% percentile bootstrap over held-out articles (all figures of a drawn article)",
    }
    return ConceptEval(metrics, labels, zero_shot, concepts, held, dataset, model, tokenizer, ids, mask)


def patch_maps(ev: ConceptEval, n_figures: int) -> list[dict]:
    """Patch-concept similarity maps for the first held-out figures that carry evaluated concepts."""
    index = {cui: j for j, (cui, _) in enumerate(ev.concepts)}
    per_template = len(ev.prompt_ids) // max(1, len(ev.concepts))
    out = []
    for i, record in enumerate(ev.records):
        own = [c for c in record.cuis if c in index]
        if not own:
            continue
        rows = [index[c] * per_template for c in own[:3]]
        image = ev.dataset.image(i, -1)[None]
        maps = ev.model.patch_concept_map(image, ev.prompt_ids[rows], ev.prompt_mask[rows])[0]
        out.append({"key": record.key, "caption": record.caption, "image": ev.dataset.base_image(i),
                    "concepts": [ev.concepts[index[c]][1] for c in own[:3]], "maps": maps.numpy()})
        if len(out) >= n_figures:
            break
    return out
