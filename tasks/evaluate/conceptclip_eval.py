"""ConceptCLIP on the test figures: zero-shot concept AUC, retrieval, PC-Align annotation AUC;
the zero-shot prompts and patch weight chosen on the validation figures first."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tasks.evaluate import localisation, tuning
from tasks.evaluate.metrics import auc_metrics, bootstrap_ci, macro_auc, n_groups, recall_at_k
from tasks.training import conceptclip_data as data
from tasks.training.conceptclip_records import mention_keys, surface_forms
from tasks.training.conceptclip_stage import SPLIT_UNIT, load_records, load_trained
from tasks.training.splits import TEST, TRAIN, VALIDATION, by_split, split_counts, split_spec


@dataclass
class ConceptEval:
    metrics: dict
    labels: np.ndarray  # [N, C] test concept truth
    scores: np.ndarray  # [N, C] zero-shot scores
    concepts: list[tuple[str, str]]  # (cui, name)
    records: list
    dataset: object
    model: object
    tokenizer: object
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    train_articles: set[str]
    located: "Located | None" = None


def concept_names(concepts_table: str | Path | None) -> dict[str, str]:
    if not concepts_table or not Path(concepts_table).is_file():
        return {}
    rows = pq.read_table(concepts_table).to_pylist()
    name_key = next((k for k in ("preferred_name", "name", "str") if rows and k in rows[0]), None)
    return {r["cui"]: r[name_key] for r in rows} if name_key else {}


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def prompts_for(concepts: list[tuple[str, str]], templates: list[str], tokenizer):
    texts = [t.format(name=name.lower()) for _, name in concepts for t in templates]
    enc = tokenizer.encode(texts)
    return enc["input_ids"], enc["attention_mask"]


@dataclass
class SplitSet:
    """One split's figures as zero-shot scoring reads them."""
    records: list
    dataset: object
    images: torch.Tensor            # [N, 3, S, S] unaugmented
    concepts: list[tuple[str, str]]  # (cui, name) with enough positives and a negative here
    labels: np.ndarray              # [N, C]

    @property
    def articles(self) -> list[str]:
        return [r.pmcid for r in self.records]


def split_set(records: list, index: dict, tokenizer, size: int, names: dict[str, str], min_pos: int) -> SplitSet:
    dataset = data.FigureDataset(records, index, tokenizer, {}, size, augment=None, cache_images=True)
    counts: dict[str, int] = {}
    for r in records:
        for cui in set(r.cuis):
            counts[cui] = counts.get(cui, 0) + 1
    concepts = [(cui, names.get(cui, cui)) for cui, c in sorted(counts.items()) if min_pos <= c < len(records)]
    labels = np.array([[cui in set(r.cuis) for cui, _ in concepts] for r in records], dtype=int)
    images = torch.stack([dataset.image(i, -1) for i in range(len(records))]) if records else torch.zeros(0)
    return SplitSet(records, dataset, images, concepts, labels.reshape(len(records), len(concepts)))


class ZeroShot:
    """Zero-shot scores of one split under any candidate: the global and the top-k patch
    parts are computed once per prompt set, so every patch weight is a blend of the two."""

    def __init__(self, model, tokenizer, split: SplitSet, surface: dict[str, str], top_k: int):
        self.model, self.tokenizer, self.split, self.surface, self.top_k = model, tokenizer, split, surface, top_k
        self._parts: dict = {}

    def prompts(self, candidate: dict, concepts: list[tuple[str, str]] | None = None):
        """Prompt ids and mask of the candidate for `concepts` (cui, name; default: the split's)."""
        wording = self.surface if candidate["prompt_wording"] == "surface" else {}
        return prompts_for([(cui, wording.get(cui, name)) for cui, name in concepts or self.split.concepts],
                           list(candidate["prompt_templates"]), self.tokenizer)

    def scores(self, candidate: dict) -> np.ndarray:
        """[N, C]: each concept's score, averaged over the candidate's templates."""
        n, c = len(self.split.records), len(self.split.concepts)
        if not c:
            return np.zeros((n, 0))
        key = (tuple(candidate["prompt_templates"]), candidate["prompt_wording"])
        if key not in self._parts:
            ids, mask = self.prompts(candidate)
            parts = [self.model.zero_shot_parts(self.split.images[b], ids, mask, self.top_k) for b in _batches(n, 64)]
            t = len(candidate["prompt_templates"])
            self._parts[key] = tuple(torch.cat([p[i] for p in parts]).view(n, c, t).mean(-1).numpy() for i in (0, 1))
        glob, local = self._parts[key]
        w = float(candidate["patch_weight"])
        return (1 - w) * glob + w * local


def evaluate(train_dir: str | Path, train_section: dict, concepts_table: str | Path | None, params: dict,
             seed: int = 0) -> ConceptEval:
    """Zero-shot choices tuned on the validation figures; the test figures scored once."""
    model, tokenizer, config = load_trained(train_dir)
    records, _, index = load_records(train_section)
    sides = by_split(records)
    if len(sides[TEST]) < 2:
        raise ValueError(f"only {len(sides[TEST])} test figures: nothing to evaluate (train_conceptclip.split)")
    size = int(config["model"]["image"]["image_size"])
    names = concept_names(concepts_table)
    min_pos = int(params["min_positives"])
    surface = surface_forms(train_section["mentions"], mention_keys(sides[TRAIN]))
    top_k = int(train_section["zero_shot"]["top_k"])
    model.eval()

    candidates = tuning.grid(dict(params["conceptclip_tuning"]))
    val_records = sides[VALIDATION]
    scorer: list[ZeroShot] = []  # built on the first score: a single candidate needs no validation pass

    def validation_auc(_position: int, candidate: dict) -> float | None:
        if not scorer:
            scorer.append(ZeroShot(model, tokenizer, split_set(val_records, index, tokenizer, size, names, min_pos),
                                   surface, top_k))
        return macro_auc(scorer[0].split.labels, scorer[0].scores(candidate))

    chosen = tuning.choose(candidates, validation_auc, len({r.pmcid for r in val_records}), len(val_records),
                           "evaluate.conceptclip_tuning")

    test = split_set(sides[TEST], index, tokenizer, size, names, min_pos)
    held, images, concepts, labels = test.records, test.images, test.concepts, test.labels
    final = ZeroShot(model, tokenizer, test, surface, top_k)
    zero_shot = final.scores(chosen.chosen)
    annotation = np.zeros(labels.shape)
    ids = mask = torch.zeros(0, 2, dtype=torch.long)
    if concepts:
        ids, mask = final.prompts(chosen.chosen)
        per_template = len(chosen.chosen["prompt_templates"])
        parts = [model.concept_patch_scores(images[b], ids, mask) for b in _batches(len(held), 64)]
        annotation = torch.cat(parts).view(len(held), len(concepts), per_template).mean(-1).numpy()
    with torch.no_grad():
        img_glob = torch.cat([model.encode_image(images[b], patches=False)[0] for b in _batches(len(held), 64)])
        txt_glob = torch.cat([model.encode_text(test.dataset.ids[b], test.dataset.mask[b])[0]
                              for b in _batches(len(held), 64)])
    sim = (img_glob @ txt_glob.t()).numpy()

    n_boot, boot_seed = int(params["bootstrap"]["n"]), int(params["bootstrap"]["seed"]) + seed
    located = localise(model, config, test, final, chosen.chosen, names, train_section, params, n_boot, boot_seed)
    # the split unit: figures of one article share authors, style and captions, so an
    # article's figures are resampled together
    articles = test.articles
    ks = tuple(int(k) for k in params["retrieval_ks"])
    i2t, t2i = recall_at_k(sim, ks), recall_at_k(sim.T, ks)
    retrieval = {}
    for name, matrix, values in (("image_to_text", sim, i2t), ("text_to_image", sim.T, t2i)):
        for k in ks:
            ci = bootstrap_ci(lambda idx, m=matrix, k=k: recall_at_k(m[np.ix_(idx, idx)], (k,))[f"R@{k}"],
                              articles, n_boot, boot_seed)
            retrieval[f"{name}_R@{k}"] = {"value": values[f"R@{k}"], "ci95": list(ci) if ci else None,
                                          "n": len(held), "groups": n_groups(articles)}
    cui_names = [f"{name} ({cui})" for cui, name in concepts]
    metrics = {
        "test_figures": len(held),
        "test_articles": len(set(articles)),
        "split": {**split_spec(train_section, SPLIT_UNIT).record(), "counts": split_counts(records, "pmcid")},
        "concepts_evaluated": len(concepts),
        **auc_metrics("zero_shot", labels, zero_shot, cui_names, articles, n_boot, boot_seed),
        **auc_metrics("annotation", labels, annotation, cui_names, articles, n_boot, boot_seed),
        "retrieval": retrieval,
        "tuning": chosen.record("zero-shot macro AUC over the validation concepts"),
        "localisation": located.metrics if located else None,
        "interval": "95% percentile bootstrap over test articles (all figures of a drawn article)",
    }
    return ConceptEval(metrics, labels, zero_shot, concepts, held, test.dataset, model, tokenizer, ids, mask,
                       {r.pmcid for r in sides[TRAIN]}, located)


def concept_maps(model, images: torch.Tensor, prompts) -> np.ndarray:
    """[N, C, g, g] patch-concept maps, each concept's averaged over its prompt templates
    (prompts: ids, mask and templates per concept)."""
    ids, mask, per_template = prompts
    maps = torch.cat([model.patch_concept_map(images[b], ids, mask) for b in _batches(len(images), 32)])
    n, t, g, _ = maps.shape
    return maps.view(n, t // per_template, per_template, g, g).mean(2).numpy()


@dataclass
class Located:
    metrics: dict
    gallery: list[dict]  # figures with drawn findings: image, truth masks, the trained maps


def localise(model, config: dict, test: SplitSet, scorer: ZeroShot, candidate: dict,
             names: dict[str, str], train_section: dict, params: dict, n_boot: int, seed: int) -> Located | None:
    """Pointing game and map AUC of the test figures' drawn findings (evaluate.localisation),
    beside a centre prior and the untrained architecture; None without truth."""
    cfg = params["localisation"]
    if cfg["truth"] is None:
        return None
    if not Path(cfg["truth"]).is_file():
        raise FileNotFoundError(f"evaluate.localisation.truth: {cfg['truth']} not found (null: no localisation truth)")
    keys = {r.key: i for i, r in enumerate(test.records)}
    panels = Path(train_section["figures"]).with_name("panels.parquet")  # written beside it by figures
    regions, skipped = localisation.read_regions(cfg["truth"], train_section["figures"], set(keys), panels)
    if not regions:
        return Located({"all": {"regions": 0}, "skipped": skipped}, [])
    cuis = sorted({r.cui for r in regions})
    prompts = (*scorer.prompts(candidate, [(c, names.get(c, c)) for c in cuis]), len(candidate["prompt_templates"]))
    column = {c: j for j, c in enumerate(cuis)}
    figures = sorted({keys[r.key] for r in regions})
    row = {i: k for k, i in enumerate(figures)}
    out, trained_maps = score_region_maps(model, config["model"], test.images[figures], regions,
                                          [(row[keys[r.key]], column[r.cui]) for r in regions], prompts,
                                          float(cfg["min_region_patches"]), n_boot, seed)
    out["per_concept"] = {f"{names.get(c, c)} ({c})": v for c, v in out["per_concept"].items()}
    gallery = []
    for i in figures[: int(params["gallery"]["n_figures"])]:
        record, own = test.records[i], [r for r in regions if keys[r.key] == i][:3]
        base = test.dataset.base_image(i)
        side = base.shape[-1]
        gallery.append({"key": record.key, "caption": record.caption, "image": base,
                        "concepts": [names.get(r.cui, r.cui) + (f" ({r.panel})" if r.panel else "") for r in own],
                        "maps": np.stack([trained_maps[row[i], column[r.cui]] for r in own]),
                        "truth": [localisation.cell_cover(r.square, side) >= 0.5 for r in own]})
    return Located({**out, "skipped": skipped}, gallery)


def score_region_maps(model, model_config: dict, images: torch.Tensor, regions: list, at: list[tuple[int, int]],
                      prompts, min_region_patches: float, n_boot: int, seed: int) -> tuple[dict, np.ndarray]:
    """Pointing game and map AUC of each region's map (at: its (image, prompt) position) beside
    a centre prior and the untrained architecture; also the trained maps [N, C, g, g]."""
    from models import build_model

    torch.manual_seed(0)  # the untrained baseline: the same architecture, freshly initialised
    untrained = build_model(copy.deepcopy(model_config)).eval()
    model.eval()
    trained_maps = concept_maps(model, images, prompts)
    untrained_maps = concept_maps(untrained, images, prompts)
    grid = trained_maps.shape[-1]
    prior = localisation.centre_prior(grid)
    maps = {"conceptclip": [trained_maps[i, j] for i, j in at], "untrained": [untrained_maps[i, j] for i, j in at],
            "centre_prior": [prior for _ in at]}
    return localisation.score(regions, maps, grid, min_region_patches, n_boot, seed), trained_maps


def patch_maps(ev: ConceptEval, n_figures: int) -> list[dict]:
    """Patch-concept similarity maps for the first test figures with drawn findings (and
    their truth outlines), else for the first that carry evaluated concepts."""
    if ev.located and ev.located.gallery:
        return ev.located.gallery[:n_figures]
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
