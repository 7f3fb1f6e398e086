"""train_conceptclip: ConceptCLIP (IT-Align + PC-Align) on the figure shards and caption concepts.

    python -m flows.train_conceptclip [--params params.yaml] [-S train_conceptclip.preset=base]

Tasks: prepare_figures, train_conceptclip_loop (here, or under torchrun when
train_conceptclip.nproc_per_node > 1), write_conceptclip_outputs.
"""
from __future__ import annotations

from flows._stage import run_in_process_cli
from flows._training import training_flow
from tasks.training import conceptclip_stage

train_conceptclip_flow = training_flow(conceptclip_stage, unit="figures", prepare_name="prepare_figures")

if __name__ == "__main__":
    run_in_process_cli(train_conceptclip_flow)
