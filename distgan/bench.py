"""The benchmark harness behind `distgan bench` and the scripts in benchmarks/.

A benchmark script `benchmarks/NAME.py` defines

    build_parser() -> argparse.ArgumentParser   its options, each with a default, and a --quick flag
    run(args) -> dict                           the measurement, as a JSON-ready dict

and runs as a plain command through `script_main`. The dict returned by run()
has a "title", a list of "rows" (dicts with the same keys, printed as a
table) and optionally "tables" and "notes". `distgan bench` loads each
script from its file, calls run() and prints every section the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from distgan.errors import ConfigError

SECTIONS = ("overhead", "data", "scaling", "inference")


def summarize(values: list[float]) -> dict[str, float]:
    """Return the median, quartiles (p25, p75), min and max of repeated measurements, and their count n."""
    if not values:
        raise ValueError("summarize needs at least one value")
    if len(values) > 1:
        p25, _, p75 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        p25 = p75 = values[0]
    return {"median": statistics.median(values), "p25": p25, "p75": p75, "min": min(values), "max": max(values),
            "n": len(values)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Describe this machine and the software versions that the figures depend on."""
    import accelerate
    import torch

    try:
        import onnxruntime

        onnxruntime_version = onnxruntime.__version__
    except ImportError:
        onnxruntime_version = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "onnxruntime": onnxruntime_version,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Format rows (dicts with the same keys) as a Markdown table."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["| " + " | ".join(column.ljust(width) for column, width in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    lines += ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |" for line in cells]
    return "\n".join(lines)


def format_result(result: dict[str, Any]) -> str:
    """Format one benchmark result: its title, its table, any further "tables" and its notes."""
    parts = [f"## {result.get('title', result.get('name', 'benchmark'))}", ""]
    if "skipped" in result:
        parts.append(f"skipped: {result['skipped']}")
    else:
        parts.append(format_table(result.get("rows", [])))
    for table in result.get("tables", []):
        parts += ["", f"### {table['title']}", "", format_table(table["rows"])]
    for note in result.get("notes", []):
        parts.append(f"- {note}")
    return "\n".join(parts)


def write_json(path: str | Path, value: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def script_main(name: str, build_parser: Callable[[], argparse.ArgumentParser],
                run: Callable[[argparse.Namespace], dict[str, Any]], argv: list[str] | None = None) -> dict[str, Any]:
    """Run a benchmark script as a command: parse options, run, print the table and write the JSON file.

    The JSON file is --out when the parser has it and is set, else NAME.json in the current directory.
    """
    args = build_parser().parse_args(argv)
    result = run(args)
    result.setdefault("name", name)
    result.setdefault("machine", machine_info())
    result.setdefault("command", " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]))
    print(format_result(result), flush=True)
    out = getattr(args, "out", None) or f"{name}.json"
    write_json(out, result)
    print(f"wrote {out}")
    return result


def start_trainer(overrides: dict[str, Any]) -> Any:
    """Plan a run from TrainConfig `overrides` (a new run, never resumed) and return its Trainer after setup().

    The caller drives Trainer.train_step() and calls Trainer.close() at the end.
    """
    from distgan.run import plan_run
    from distgan.trainer import Trainer

    plan = plan_run(None, overrides, resume="never")
    trainer = Trainer(plan.config, plan.data)
    trainer.setup()
    return trainer


def default_scripts_dir() -> Path | None:
    """Return benchmarks/ in the current directory, else the one beside this package's source tree, else None."""
    for candidate in (Path.cwd() / "benchmarks", Path(__file__).resolve().parents[1] / "benchmarks"):
        if (candidate / "overhead.py").is_file():
            return candidate
    return None


def load_script(path: Path) -> ModuleType:
    """Import a benchmark script from its file, with its folder on sys.path for its own imports."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"distgan_benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_section(scripts_dir: Path, name: str, quick: bool) -> dict[str, Any]:
    """Run benchmarks/NAME.py through its run(); a script that is not there gives a section marked skipped."""
    path = scripts_dir / f"{name}.py"
    if not path.is_file():
        return {"name": name, "title": name, "skipped": f"{path} not found", "rows": []}
    module = load_script(path)
    if hasattr(module, "build_parser"):
        # parse_known_args, so that a script without a --quick flag runs at its defaults.
        args, _ = module.build_parser().parse_known_args(["--quick"] if quick else [])
    else:
        args = argparse.Namespace(quick=quick)
    result = module.run(args)
    result.setdefault("name", name)
    return result


def parse_sections(only: str | None) -> list[str]:
    """Split a comma-separated --only value into section names; raises ConfigError for an unknown one."""
    if only is None:
        return list(SECTIONS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise ConfigError(f"invalid benchmark section {', '.join(unknown) or repr(only)}; "
                          f"choose from {', '.join(SECTIONS)}")
    return names
