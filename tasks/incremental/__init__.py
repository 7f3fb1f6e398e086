"""Incremental updates: per-item results kept between runs, and shard layouts set by content."""
