"""Prefect flows: one per pipeline stage, plus the end-to-end pipeline and lineage.

Importing this package sets Prefect's offline defaults before Prefect itself is
imported, so every `python -m flows.<stage>` runs without a configured server and
without reaching the network.
"""
from flows._runtime import configure_offline_defaults

configure_offline_defaults()
