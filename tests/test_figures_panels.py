"""Compound captions split into subcaptions; the sample generator's panels are the ground truth."""
from __future__ import annotations

from tasks.common.params import load_params
from tasks.figures.jats_figures import parse_figures
from tasks.figures.panels import split_caption


def _panels(caption: str) -> dict[str, str]:
    return {p["panel"]: p["text"] for p in split_caption(caption)[1]}


def test_prefix_styles():
    shared, parts = split_caption("Chest CT in a man. (A) Axial CT (CT) shows a nodule. No effusion. (B) Radiograph.")
    assert shared == "Chest CT in a man."
    assert parts == [{"panel": "A", "text": "Axial CT (CT) shows a nodule. No effusion."},
                     {"panel": "B", "text": "Radiograph."}]
    assert _panels("Title. A, First view. B, Second view.") == {"A": "First view.", "B": "Second view."}
    assert _panels("a) left lung b) right lung") == {"A": "left lung", "B": "right lung"}
    assert _panels("(a–c) Maps at t = 0. (d) Spectrum; as in (a).") == {
        "A": "Maps at t = 0.", "B": "Maps at t = 0.", "C": "Maps at t = 0.", "D": "Spectrum; as in (a)."}
    assert _panels("Networks. Left: k = 49. Center: k = 40. Right: k = 40, max.") == {
        "Left": "k = 49.", "Center": "k = 40.", "Right": "k = 40, max."}


def test_suffix_style_and_non_compound():
    assert _panels("Amplitude (a), ion density (b) and electron energy (c). Scales are linear.") == {
        "A": "Amplitude", "B": "ion density", "C": "electron energy"}
    for plain in ["Computed tomography (CT) of the chest shows a nodule.", "Vitamin A, given daily (n = 3).",
                  "Only one panel (A) is referred to.", "(B) alone is no sequence."]:
        assert split_caption(plain)[1] == [], plain


def test_sample_generator_compound_captions_split_into_its_panels(repo_root):
    """The generator's own JATS captions, parsed as the stage does, give back its panels exactly."""
    from tasks.sample.jats import build_nxml
    from tasks.sample.literature import build_article

    params = load_params(repo_root / "params.yaml")
    compound = simple = 0
    for index in range(16):
        article, _, _ = build_article(params, index)
        parsed = {f.fig_id: f for f in parse_figures(build_nxml(article))}
        for spec in article.figures:
            shared, parts = split_caption(parsed[spec.fig_id].caption)
            if spec.panels:
                compound += 1
                assert shared == spec.title
                assert parts == [{"panel": p["panel"], "text": p["text"]} for p in spec.panels], spec.caption
            else:
                simple += 1
                assert parts == [], spec.caption
    assert compound >= 5 and simple >= 20, (compound, simple)
