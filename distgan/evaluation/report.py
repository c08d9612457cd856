"""Evaluation results as a terminal table and as a JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _format(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def table_rows(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Turn the metric groups of an evaluation into (name, value) rows for the terminal."""
    rows: list[tuple[str, str]] = []
    mixture = metrics.get("mixture")
    if mixture:
        rows += [
            ("modes covered", f"{mixture['modes_covered']} / {mixture['modes_total']}"),
            ("high-quality samples (within 3 std)", f"{mixture['high_quality_percent']:.2f} %"),
            ("reverse KL of the mode histogram", _format(mixture["reverse_kl"])),
        ]
    digits = metrics.get("digits")
    if digits:
        rows += [
            ("classes covered (confidence >= 0.9)", f"{digits['classes_covered']} / {digits['classes_total']}"),
            ("class-histogram KL from uniform", _format(digits["class_kl"])),
            ("confident samples", f"{digits['confident_percent']:.2f} %"),
            ("classifier Frechet distance", _format(digits["frechet_distance"])),
            ("  real-vs-real floor", _format(digits["frechet_floor"])),
            ("  ratio to the floor", _format(digits["frechet_ratio"])),
        ]
        if "label_accuracy" in digits:
            rows.append(("predicted class = requested label", f"{100 * digits['label_accuracy']:.2f} %"))
    inception = metrics.get("inception")
    if inception:
        rows += [
            ("FID (Inception-v3 pool3)", _format(inception["fid"])),
            ("KID x 1000 (mean +- std)", f"{1000 * inception['kid_mean']:.3f} +- {1000 * inception['kid_std']:.3f}"),
        ]
    return rows


def format_table(title: str, rows: list[tuple[str, str]]) -> str:
    """Return a two-column text table under a title line."""
    if not rows:
        return f"{title}\n  (no metrics for this data set)"
    width = max(len(name) for name, _ in rows)
    lines = [title, f"  {'metric'.ljust(width)}  value", f"  {'-' * width}  {'-' * 12}"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def write_json(path: Path, result: dict[str, Any]) -> Path:
    """Write the evaluation result as indented JSON, infinities and NaN as null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(result), indent=2) + "\n", encoding="utf-8")
    return path
