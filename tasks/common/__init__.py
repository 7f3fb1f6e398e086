"""Helpers shared by every stage: params, tables, hashing, summaries, safe I/O."""
