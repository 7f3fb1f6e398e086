"""Concept linking: the reusable linker (linker.py), ConText rules, the caption stage's logic."""
