"""Stage summaries: progress lines while a stage runs, a summary at the end, as JSON too."""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping


@dataclass
class StageSummary:
    """Counts of one stage run. `summary.json` holds only deterministic counts;
    throughput goes to `timing.json` so outputs stay byte-identical across runs."""

    stage: str
    unit: str = "items"
    out_unit: str | None = None  # what items_out counts, when not `unit` (articles in, figures out)
    items_in: int = 0
    items_out: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _last_progress: float = 0.0

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def add_rejections(self, reasons: Iterable[str]) -> None:
        self.rejected_by_reason.update(reasons)

    def merge_counts(self, counts: Mapping[str, int]) -> None:
        from tasks.common.sharding import add_counts

        add_counts(self.extra, dict(counts))

    def progress(self, done: int, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < 2.0 and done < total:
            return
        self._last_progress = now
        elapsed = max(now - self.started, 1e-9)
        # Counts are known only when shards are merged; progress is in shards.
        print(f"[{self.stage}] {done}/{total} shards done ({elapsed:.1f}s)", file=sys.stderr, flush=True)

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def as_dict(self) -> dict:
        data = {
            "stage": self.stage,
            "unit": self.unit,
            **({"out_unit": self.out_unit} if self.out_unit else {}),
            "items_in": self.items_in,
            "items_out": self.items_out,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
        }
        data.update(dict(sorted(self.extra.items())))
        return data

    def timing(self) -> dict:
        seconds = self.seconds()
        return {
            "stage": self.stage,
            "seconds": round(seconds, 3),
            "items_per_second": round(self.items_in / seconds, 3) if seconds > 0 else None,
        }

    def write(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "summary.json"
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        (out_dir / "timing.json").write_text(json.dumps(self.timing(), indent=2) + "\n", encoding="utf-8")
        return path

    def report(self) -> str:
        timing = self.timing()
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected_by_reason.items())) or "none"
        return (
            f"[{self.stage}] done: {self.items_in} {self.unit} in, {self.items_out}{' ' + self.out_unit if self.out_unit else ''} out, "
            f"{self.rejected} rejected ({reasons}); {timing['seconds']}s, "
            f"{timing['items_per_second']} {self.unit}/s"
        )
