"""Provenance: the DVC DAG in order, and the chain of stages behind any artifact."""
