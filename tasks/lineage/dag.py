"""The stage DAG as DVC sees it (dvc.yaml), in a deterministic execution order."""
from __future__ import annotations

from pathlib import Path

import networkx as nx
from dvc.repo import Repo


def stage_order(root: str | Path = ".", targets: list[str] | None = None) -> list[str]:
    """Stage names, dependencies first; ties broken by name so the order is stable.

    With `targets`, only those stages and the stages they depend on (as `dvc repro TARGET`).
    """
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        names = nx.DiGraph()
        for stage in graph.nodes:
            names.add_node(stage.addressing)
        for dependant, dependency in graph.edges:
            names.add_edge(dependency.addressing, dependant.addressing)
    if targets:
        unknown = sorted(set(targets) - set(names.nodes))
        if unknown:
            raise ValueError(f"no stage {', '.join(unknown)} in dvc.yaml (stages: {', '.join(sorted(names.nodes))})")
        wanted = set(targets).union(*(nx.ancestors(names, t) for t in targets))
        names = names.subgraph(wanted)
    return list(nx.lexicographical_topological_sort(names))


def stale_stages(root: str | Path, stage: str) -> dict:
    """What DVC finds changed for one stage (empty when it is up to date)."""
    with Repo(str(root)) as repo:
        return repo.status(targets=[stage], with_deps=False)


def reproduce_stage(root: str | Path, stage: str) -> list[str]:
    """Run one stage through DVC, exactly as `dvc repro -s <stage>` does (dvc.lock updated)."""
    with Repo(str(root)) as repo:
        done = repo.reproduce(targets=[stage], single_item=True)
    return [s.addressing for s in done]
