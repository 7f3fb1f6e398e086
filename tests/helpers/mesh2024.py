"""MeSH 2024 (../shared/data/umls/mesh2024) converted and indexed the way umls_index does it, for
tests that link with a real vocabulary: build once per module (about 20 s) and open a linker on it."""
from __future__ import annotations

from pathlib import Path

from tasks.umls.index import build_index
from tasks.umls.mesh_xml import mesh_xml_to_rrf


def build_mesh2024_index(shared_data: Path, root: Path, umls_index: dict, supplement: str | Path | None = None) -> dict:
    """MeSH 2024's descriptors (plus the radiology supplement when given) under root/META,
    indexed under root/index with the umls_index section's options."""
    converted = mesh_xml_to_rrf(shared_data / "umls" / "mesh2024" / "desc2024_terms.xml.gz", root / "META",
                                permute_inverted=umls_index["mesh_permute_inverted"],
                                permuted_terms=umls_index["mesh_permuted_terms"], supplement=supplement)
    built = build_index(root / "META", root / "index", umls_index, semantic_groups_file=root / "META" / "SemGroups.txt")
    return {"meta": root / "META", "index": root / "index", "converted": converted, "built": built}
