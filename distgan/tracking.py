"""metrics.jsonl as an Accelerate tracker, so it sits beside TensorBoard or W&B in `log_with`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

METRICS_FILE = "metrics.jsonl"


class JsonlTracker(GeneralTracker):
    """Append one JSON object per logged step to run_dir/metrics.jsonl (main process only).

    Non-finite floats are written as null, because JSON has no NaN.
    """

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(run_dir) / METRICS_FILE
        self._file = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    @property
    def tracker(self) -> Any:
        return self._file

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        row = {"step": step} if step is not None else {}
        for key, value in values.items():
            row[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop logged rows after `last_step`, which a resumed run is about to train again."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a row cut short by a crash
        if not isinstance(row, dict):
            continue  # not a row this tracker wrote
        step = row.get("step")
        if not isinstance(step, int) or step <= last_step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
