"""The evaluate_conceptclip stage's work: ConceptCLIP tuned on validation and scored on the test figures, then its
ROC curve and plot, patch-concept gallery and model card in the model's folder."""
from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from tasks.common.locations import recorded
from tasks.common.sharding import ShardResult
from tasks.evaluate import cards, conceptclip_eval, plots
from tasks.evaluate.stage import CARD_LINEAGE, opening, training_summary


def evaluate_conceptclip(cfg: dict, out_dir: str) -> dict:
    ev_params = cfg
    section, out, train_dir = opening(cfg, "train_conceptclip", out_dir)
    ev = conceptclip_eval.evaluate(train_dir, section, ev_params["concepts_table"], ev_params)
    names = [name for _, name in ev.concepts]
    plots.write_micro_roc_csv(ev.labels, ev.scores, out / "roc" / "roc_conceptclip.csv")
    plots.roc_png(ev.labels, ev.scores, names, "ConceptCLIP zero-shot (test figures)",
                  out / "plots" / "roc_conceptclip.png")
    for i, item in enumerate(conceptclip_eval.patch_maps(ev, int(ev_params["gallery"]["n_figures"]))):
        plots.patch_overlay_png(item, out / "galleries" / f"{i:02d}_{item['key'][:40]}.png")
    figures = pq.read_table(section["figures"], columns=["pmcid", "licence"]).to_pylist()
    train_articles = ev.train_articles
    train_licences = Counter(f["licence"] for f in {f["pmcid"]: f for f in figures}.values()
                             if f["pmcid"] in train_articles)
    training = training_summary(train_dir)
    m = ev.metrics
    steps = (f"{section['max_steps']} steps and the other loop settings are params (train_conceptclip), set by "
             f"reading the validation loss curve")
    sections = cards.splits_section(m["split"], "article", "figures", m["tuning"], steps) + [""]
    sections += cards.per_label_section("Zero-shot AUC per concept (test)", m["zero_shot_auc"],
                                        m["zero_shot_support"], "article")
    sections += [""] + cards.localisation_section(m["localisation"])
    card = cards.model_card(
        "ConceptCLIP — model card",
        "Research on concept-aware image–text alignment for biomedical figures: zero-shot concept "
        "recognition, image–text retrieval and patch-level concept localisation on figures from open-access "
        "literature. Not a medical device; not for diagnosis or patient care.",
        ["Trained on the data named below only; on the embedded sample the figures are synthetic and the "
         "model learns their simplified appearance, not real radiology.",
         "Concepts come from automatic UMLS linking of captions (negated mentions excluded); linking errors "
         "become label noise.",
         "Test metrics use a deterministic split by article; intervals are a bootstrap over test "
         "articles (every figure of a drawn article comes along)."],
        [f"- figures: {len(figures)} from {len({f['pmcid'] for f in figures})} articles; test: "
         f"{m['test_figures']} figures from {m['test_articles']} articles",
         f"- concepts evaluated (>= {ev_params['min_positives']} test positives and a negative): "
         f"{m['concepts_evaluated']}"],
        train_licences, training,
        [("zero-shot macro AUC", m["zero_shot_macro_auc"]), ("PC-Align annotation macro AUC", m["annotation_macro_auc"])]
        + [(k, v) for k, v in m["retrieval"].items()],
        recorded(train_dir / "model.safetensors", cfg["run_root"]), CARD_LINEAGE, sections,
        unit="article", items="figures",
    )
    (out / "model_cards").mkdir(parents=True, exist_ok=True)
    (out / "model_cards" / "conceptclip.md").write_text(card, encoding="utf-8")
    return {"artifact": recorded(train_dir / "model.safetensors", cfg["run_root"]), **m}


def work(model: str, cfg: dict, out: str) -> ShardResult:
    return ShardResult(value={model: evaluate_conceptclip(cfg, out)})
