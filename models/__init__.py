"""Torch modules and losses only: no file I/O, no params parsing."""
