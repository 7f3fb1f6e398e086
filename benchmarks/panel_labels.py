"""Panel labels read by OCR (figures.panel_labels: ocr, tasks/figures/panel_labels.py), measured.

    python benchmarks/panel_labels.py --data ../shared/data

Sample: the sample generator's compound figures (it records each panel's letter and box): the
share of drawn letters read correctly at the true boxes, and pairing accuracy with the labels
read at the detected boxes. Real (eLife and PLOS figures with subcaption letters): figures
whose read letters equal their subcaption letters; figures left whole for a label mismatch;
and the panel count found with the OCR-read letters as the count prior instead of the
subcaption count (letters read over the whole figure, see whole_figure_letters), beside the
unguided count. Time: CPU ms per panel read. Writes benchmarks/results/panel_labels.json.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._measure import write_result  # noqa: E402
from tasks.common.params import load_params  # noqa: E402
from tasks.figures import panel_labels  # noqa: E402
from tasks.figures.jats_figures import parse_figures  # noqa: E402
from tasks.figures.panel_detect import box_iou, detect_panels  # noqa: E402
from tasks.figures.panel_pairing import LABEL_MISMATCH, pair_panels  # noqa: E402
from tasks.figures.panels import split_caption  # noqa: E402


def sample_figures(repo: Path) -> list:
    from tasks.sample.articles import build_article
    from tasks.sample.jats import build_nxml

    params = load_params(repo / "params.yaml")
    out = []
    for index in range(int(params["sample"]["literature"]["n_articles"])):
        article, images, _ = build_article(params, index)
        captions = {f.fig_id: f.caption for f in parse_figures(build_nxml(article))}
        out.extend((spec, captions[spec.fig_id], Image.open(io.BytesIO(images[spec.graphic])).convert("RGB"))
                   for spec in article.figures if spec.panels)
    return out


def sample_measure(figures: list) -> dict:
    read = correct = paired_ok = total = 0
    cpu = time.process_time()
    for spec, caption, image in figures:
        truth = [p["panel"] for p in spec.panels]
        got = panel_labels.read_labels(image, [p["box"] for p in spec.panels])
        read += sum(g is not None for g in got)
        correct += sum(g == t for g, t in zip(got, truth))
        shared, subcaptions = split_caption(caption)
        detection = detect_panels(image, len(subcaptions) or None)
        labels = panel_labels.read_labels(image, [p.box for p in detection.panels])
        by_label = {p.label: p for p in pair_panels(detection.panels, subcaptions, shared, labels=labels).panels}
        for panel in spec.panels:
            total += 1
            mine = by_label.get(panel["panel"])
            paired_ok += bool(mine and mine.subcaption == panel["text"] and box_iou(mine.box, panel["box"]) >= 0.9)
    cpu = time.process_time() - cpu
    return {"figures": len(figures), "panels": total, "labels_read": read, "labels_correct": correct,
            "label_accuracy": round(correct / total, 4), "pairing_accuracy_with_ocr": round(paired_ok / total, 4),
            "cpu_s": round(cpu, 2)}


def whole_figure_letters(image: Image.Image) -> list[str]:
    """Single letters OCR reads anywhere in the figure that run A, B, C ... from A (the
    count prior without a caption): the run's letters."""
    engine = panel_labels._engine()
    scale = panel_labels.UPSCALE
    big = image.resize((image.width * scale, image.height * scale), Image.BICUBIC)
    results, _ = engine(np.asarray(big), use_cls=False)
    found = {panel_labels.label_of([r]) for r in results or []} - {None}
    run = []
    while chr(ord("A") + len(run)) in found:
        run.append(chr(ord("A") + len(run)))
    return run


def real_measure(data: Path) -> dict:
    from tests.helpers.real_panels import real_lettered_figures

    figures = real_lettered_figures(data)
    equal = mismatch = prior_count = free_count = panels = 0
    label_cpu = prior_cpu = 0.0
    per_figure = {}
    for name, jpeg, letters in figures:
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        detection = detect_panels(image, len(letters))
        cpu = time.process_time()
        got = panel_labels.read_labels(image, [p.box for p in detection.panels])
        label_cpu += time.process_time() - cpu
        panels += len(got)
        equal += got == letters
        subcaptions = [{"panel": letter, "text": letter} for letter in letters]
        mismatch += pair_panels(detection.panels, subcaptions, "", labels=got).reason == LABEL_MISMATCH
        cpu = time.process_time()
        run = whole_figure_letters(image)
        prior_cpu += time.process_time() - cpu
        with_ocr_prior = len(detect_panels(image, len(run) if len(run) >= 2 else None).panels)
        free = len(detect_panels(image, None).panels)
        prior_count += with_ocr_prior == len(letters)
        free_count += free == len(letters)
        per_figure[name] = {"letters": "".join(letters), "read": "".join(g or "." for g in got),
                            "ocr_run": "".join(run), "count_ocr_prior": with_ocr_prior, "count_free": free}
    return {"figures": len(figures), "panels": panels, "figures_read_equal_subcaption_letters": equal,
            "figures_label_mismatch": mismatch,
            "count_agreement_ocr_prior": prior_count, "count_agreement_unguided": free_count,
            "label_ms_per_panel": round(1000 * label_cpu / panels, 1),
            "whole_figure_ocr_ms_per_figure": round(1000 * prior_cpu / len(figures), 1), "per_figure": per_figure}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    panel_labels.check_method(panel_labels.OCR)
    panel_labels.read_label(Image.new("RGB", (64, 64), "white"), (0, 0, 64, 64))  # the engine, built once
    result = {"ocr": panel_labels.engine_version(), "sample": sample_measure(sample_figures(repo))}
    if (args.data / "pmc" / "jats").is_dir():
        result["real"] = real_measure(args.data)
    write_result("panel_labels", result)


if __name__ == "__main__":
    main()
