"""The real eLife and PLOS figures whose captions name panel letters (../shared/data/pmc/jats),
normalised as the figures stage stores them."""
from __future__ import annotations

from pathlib import Path

from tasks.figures import images, jats_figures, panels


def real_lettered_figures(data: Path, max_side: int = 1024) -> list[tuple[str, bytes, list[str]]]:
    """(article/figure id, stored JPEG, subcaption letters) per figure with two or more letters."""
    out = []
    for folder in sorted((Path(data) / "pmc" / "jats").iterdir()):
        if not folder.name.startswith(("elife", "plos")):
            continue
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
        nxml = next(f for f in files if f.endswith(("xml", "nxml")))
        for fig in jats_figures.parse_figures((folder / nxml).read_bytes()):
            candidates = jats_figures.graphic_candidates(fig.href, files) if fig.href else []
            letters = [s["panel"] for s in panels.split_caption(fig.caption)[1] if len(s["panel"]) == 1]
            if not candidates or len(letters) < 2:
                continue
            sizes = {c: images.image_size((folder / c).read_bytes()) for c in candidates}
            graphic = jats_figures.choose_graphic(candidates, sizes) or candidates[0]
            encoded = images.normalise((folder / graphic).read_bytes(), 178_956_970, max_side, 90)
            out.append((f"{folder.name}/{fig.fig_id}", encoded.jpeg, letters))
    return out
