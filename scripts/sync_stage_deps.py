"""Make dvc.yaml's code deps the modules each stage's command really imports.

    python scripts/sync_stage_deps.py            # per stage: missing and excess; exit 1 if any
    python scripts/sync_stage_deps.py --write    # rewrite the repository part of every deps list

Only deps inside flows/, tasks/ and models/ are rewritten (one file a line, sorted, so a new
module is a visible change); data deps, comments and the rest of the layout stay as written.
Rerun with --write after moving, adding or removing a module.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from any folder

from tasks.lineage.stage_deps import compare_all, sync_dvc_yaml  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/sync_stage_deps.py", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's repository deps from the code")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    if args.write:
        before, changed = sync_dvc_yaml(args.root)
    else:
        before, changed = compare_all(args.root), False
    for stage in before:
        print(stage.message())
    out_of_sync = [s.stage for s in before if not s.in_sync]
    if args.write:
        print(f"dvc.yaml {'rewritten' if changed else 'unchanged'}"
              + (f" ({len(out_of_sync)} stages' repository deps synced)" if out_of_sync else ""))
        return 0
    return 1 if out_of_sync else 0


if __name__ == "__main__":
    raise SystemExit(main())
