"""UMLS-format vocabularies: RRF reading and writing, MeSH conversion, QuickUMLS index build."""
