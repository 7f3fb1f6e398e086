"""Training of ConceptCLIP and fVLM: datasets, splits, optimisation, checkpoints, DDP, lineage."""
