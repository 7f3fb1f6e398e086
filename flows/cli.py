"""`medconcept` console command: `medconcept lineage ...`, `medconcept run <stage> ...`,
`medconcept export-open-clip ...`."""
from __future__ import annotations

import importlib
import sys

USAGE = """usage: medconcept lineage <path> [--json] [--samples] [--rev REV] [--verify]
       medconcept run <stage> [--params FILE] [-S section.key=value ...]
       medconcept pipeline [--params FILE] [-S ...]
       medconcept predict <model_dir> <input> ... --out DIR [options]   (--help: the options)
       medconcept export-open-clip <trained_dir> <out_dir>
       medconcept export-open-clip --relink <export_dir>"""


def main(argv=None) -> int:
    import flows  # noqa: F401  (offline defaults)

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "lineage":
        from flows.lineage import main as lineage_main

        return lineage_main(rest)
    if command == "predict":
        from flows.predict import main as predict_main

        return predict_main(rest)
    if command == "pipeline":
        from flows.pipeline import main as pipeline_main

        pipeline_main(rest)
        return 0
    if command == "export-open-clip":
        from flows.export_open_clip import main as export_main

        return export_main(rest)
    if command == "run" and rest:
        module = importlib.import_module(f"flows.{rest[0]}")
        flow_fn = next(getattr(module, n) for n in dir(module) if n.endswith("_flow") and n != "pipeline_flow")
        from flows._stage import run_stage_cli

        run_stage_cli(flow_fn, rest[1:])
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
