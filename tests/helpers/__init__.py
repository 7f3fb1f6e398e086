"""Helpers shared by tests/ and benchmarks/ (toy training data, BC5CDR scoring, report label scores).

Kept outside the installed packages (flows, tasks, models): no stage imports them.
"""
