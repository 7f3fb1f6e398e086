"""The files of a umls_index output the linker reads: its QuickUMLS folder and concepts.parquet."""
from __future__ import annotations

from pathlib import Path

from tasks.linking import quickumls_adapter as qa


def quickumls_dir(index_dir: str | Path) -> Path:
    """The QuickUMLS folder of a umls_index output (or a bare QuickUMLS index folder)."""
    index_dir = Path(index_dir)
    nested = index_dir / "quickumls"
    return nested if nested.is_dir() else index_dir


def open_quickumls(index_dir: str | Path, **kwargs):
    """A QuickUMLS matcher that needs no download: stopwords from the index, no spaCy model."""
    qdir = quickumls_dir(index_dir)
    nltk_dir = qdir / "nltk_data"
    if not (qdir / "umls-simstring.db").exists():
        raise FileNotFoundError(f"no QuickUMLS index in {qdir}")
    return qa.open_matcher(qdir, nltk_dir if nltk_dir.is_dir() else None, **kwargs)


def load_concepts(index_dir: str | Path) -> dict[str, tuple[str, tuple[str, ...], str, frozenset]]:
    """cui -> (preferred name, TUIs, group, all groups) from concepts.parquet, when present.

    A full UMLS has millions of concepts and a few hundred distinct type lists, so those
    are shared, not one object per concept, and the table is read in batches."""
    path = Path(index_dir) / "concepts.parquet"
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    shared: dict = {}
    concepts = {}
    columns = ["cui", "preferred_name", "semantic_types", "semantic_group", "semantic_groups"]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=columns):
        table = batch.to_pydict()
        for cui, name, types, group, groups in zip(*(table[c] for c in columns)):
            types, groups = tuple(types), frozenset(groups)
            concepts[cui] = (name, shared.setdefault(types, types), shared.setdefault(group, group),
                             shared.setdefault(groups, groups))
    return concepts
