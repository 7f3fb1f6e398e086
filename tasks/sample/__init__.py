"""The `sample` stage: the embedded default inputs, generated deterministically from a seed."""
