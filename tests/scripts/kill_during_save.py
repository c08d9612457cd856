"""Run `distgan ARGS` in this process and kill it with SIGKILL at a chosen point inside one checkpoint save.

Arguments: the kill point (one of POINTS), the step whose save is interrupted,
then the arguments of the distgan command. Every other save runs normally.
The kill is a real SIGKILL of this process, so no Python cleanup runs.
"""

import os
import signal
import sys
from pathlib import Path

from distgan import checkpoint, cli

POINTS = (
    "torn-weights",  # D.safetensors written and cut to half its size in the temporary directory
    "before-rename",  # the temporary directory complete and synced, not yet renamed into place
    "before-generator",  # the checkpoint renamed into place, generator/ not yet refreshed
    "torn-generator",  # generator/'s temporary weights file written and cut to half its size
)
point, target_step, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if point not in POINTS:
    sys.exit(f"unknown kill point {point!r}; choose one of {', '.join(POINTS)}")
saving_step = None


def kill() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def tear(path: Path) -> None:
    """Cut a written file to half its size, as a write interrupted by the kill would leave it."""
    os.truncate(path, Path(path).stat().st_size // 2)
    kill()


def wrap(name, before=None, after=None):
    original = getattr(checkpoint, name)

    def wrapper(*call_args, **call_kwargs):
        if saving_step == target_step and before is not None:
            before(*call_args)
        result = original(*call_args, **call_kwargs)
        if saving_step == target_step and after is not None:
            after(*call_args)
        return result

    setattr(checkpoint, name, wrapper)


def track_step(original):
    def wrapper(run_dir, step, *rest, **kwargs):
        global saving_step
        saving_step = step
        try:
            return original(run_dir, step, *rest, **kwargs)
        finally:
            saving_step = None

    return wrapper


checkpoint.save_checkpoint = track_step(checkpoint.save_checkpoint)
if point == "torn-weights":
    wrap("_write_bytes", after=lambda path, data: tear(path) if Path(path).name == "D.safetensors" else None)
elif point == "before-rename":
    wrap("_publish", before=lambda temporary, final: kill())
elif point == "before-generator":
    wrap("write_generator", before=lambda *call_args: kill())
elif point == "torn-generator":
    wrap("_write_bytes", after=lambda path, data: tear(path) if Path(path).parent.name == "generator" else None)

# The trainer imported save_checkpoint by name, so it needs the tracking version too.
import distgan.trainer  # noqa: E402

distgan.trainer.save_checkpoint = checkpoint.save_checkpoint
sys.argv = ["distgan", *args]
cli.main()
