"""Entry point of one torchrun rank: `python -m tasks.training.rank_main <stage> <params.json>`.

Every rank prepares the same data (deterministic), trains its share of each global
batch; rank 0 writes the outputs.
"""
from __future__ import annotations

import json
import sys


def main(argv=None) -> None:
    import torch.distributed as dist

    from tasks.training.common import init_distributed, rank_world

    stage, spec = (argv or sys.argv[1:])[:2]
    params = json.loads(open(spec, encoding="utf-8").read())
    init_distributed()
    rank, _ = rank_world()
    if stage == "train_conceptclip":
        from tasks.training import conceptclip_stage as mod
    elif stage == "train_fvlm":
        from tasks.training import fvlm_stage as mod
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    try:
        prep = mod.prepare(params)
        result = mod.train(prep, log=print if rank == 0 else (lambda _m: None))
        if rank == 0:
            print(json.dumps(mod.write_outputs(prep, result, params), indent=2))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
