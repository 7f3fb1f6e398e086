"""Concept linking: the reusable linker (linker.py) and the caption stage's logic
(negation and uncertainty: tasks/common/assertion.py)."""
