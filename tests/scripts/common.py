"""Set-up shared by the launched test programs: a small resolved configuration and its data."""

from __future__ import annotations

from pathlib import Path

from distgan.config import build_config
from distgan.data import open_data
from distgan.run import resolve_config


def small_config(out: Path, **overrides):
    """Return (resolved config, data set) of a dense GAN on grid25, small enough for a few quick steps."""
    values = {"data": "grid25", "batch_size": 16, "width": 16, "steps": 6, "log_every": 1, "sample_every": 0,
              "checkpoint_every": 0, "out": str(out), "cpu": True, **overrides}
    config = build_config(None, values)
    data = open_data(config.data, config.resolution, config.channels)
    return resolve_config(config, data), data
