"""train_fvlm: fVLM (anatomy-level CT-report alignment) on prepared CT tensors and descriptions.

    python -m flows.train_fvlm [--params params.yaml] [-S train_fvlm.preset=base]

Reads fvlm_prepare's per-study tensors (train_fvlm.prepared) from disk through the
DataLoader's workers; the corpus never sits in memory (unless train_fvlm.cache_in_memory).
Tasks: prepare_ct (the study tables, pairing and accounting), train_fvlm_loop (here, or
under torchrun when train_fvlm.nproc_per_node > 1), write_fvlm_outputs.
"""
from __future__ import annotations

from flows._stage import run_in_process_cli
from flows._training import training_flow
from tasks.training import fvlm_stage

train_fvlm_flow = training_flow(fvlm_stage, unit="studies", prepare_name="prepare_ct")

if __name__ == "__main__":
    run_in_process_cli(train_fvlm_flow)
