"""Trainer overhead: distgan's training step against a minimal hand-written PyTorch loop.

Both sides train the same architecture from the same initial weights on the
same data, batch size, loss and Adam settings, with the same D and G
updates. G runs under no_grad in the D phase, and D's parameters are frozen
in the G phase.
distgan runs through Trainer.setup() and Trainer.train_step(), so the
measurement includes everything a real step does: the (seed, step) batch
schedule, seeded latents, Accelerate's backward and optimizer wrappers and
the statistics tensor. EMA and R1 are off on both sides, because they are
extra work rather than overhead. Short timed blocks alternate A B B A ... in one
process, so that load from other programs hits both sides alike, and the
figure is the ratio of the two sides' median images per second. The spread
is the interquartile range of the ratios of neighbouring blocks.

    python benchmarks/overhead.py                      # dense and DCGAN pairs on MNIST, 1 CPU process
    python benchmarks/overhead.py --device cuda --data mnist --resolution 64 --channels 3 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from distgan.bench import script_main, start_trainer, summarize
from distgan.config import MIXED_PRECISION
from distgan.errors import ConfigError
from distgan.losses import get_loss
from distgan.models import build_discriminator, build_generator
from distgan.step import STAT_NAMES, frozen
from distgan.trainer import Trainer

TARGET_RATIO = 0.95  # distgan's images per second over the minimal loop's, on 1 CPU process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="dense,dcgan", help="Comma-separated models to compare (default: %(default)s).")
    parser.add_argument("--data", default="mnist", help="mnist or a packed data set (default: %(default)s).")
    parser.add_argument("--resolution", type=int, help="Image side in pixels; default: the data set's.")
    parser.add_argument("--channels", type=int, help="1 or 3; default: the data set's.")
    parser.add_argument("--batch-size", type=int, default=64, help="Batch size of one process (default: %(default)s).")
    parser.add_argument("--width", type=int, help="Base layer width of G and D; default: the model's.")
    parser.add_argument("--steps", type=int, default=5, help="Training steps per timed block (default: %(default)s).")
    parser.add_argument("--repeats", type=int, default=40, help="Timed blocks of each side (default: %(default)s).")
    parser.add_argument("--warmup", type=int, default=5, help="Untimed steps of each side first (default: %(default)s).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Training device (default: %(default)s).")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="no", help="(default: %(default)s)")
    parser.add_argument("--compile", action="store_true", help="torch.compile G and D on both sides.")
    parser.add_argument("--channels-last", action="store_true", help="Channels-last weights on both sides.")
    parser.add_argument("--threads", type=int, help="torch intra-op threads; default: torch's choice.")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes for a smoke run; the figures mean nothing.")
    parser.add_argument("--out", help="JSON file to write (default: overhead.json).")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.steps, args.repeats, args.warmup, args.width, args.batch_size = 2, 2, 1, 8, 8


def make_trainer(args: argparse.Namespace, model: str, run_dir: Path) -> Trainer:
    """Set up a real Trainer for `model` without starting its loop."""
    total_steps = args.warmup + args.repeats * args.steps + 1
    return start_trainer({
        "data": args.data, "model": model, "resolution": args.resolution, "channels": args.channels,
        "width": args.width, "batch_size": args.batch_size, "steps": total_steps, "ema": False,
        "r1_gamma": 0.0,  # the minimal loop has no penalty; R1 is extra work, not overhead
        "mixed_precision": args.mixed_precision, "cpu": args.device == "cpu", "compile": args.compile,
        "channels_last": args.channels_last, "log_every": total_steps, "sample_every": 0, "checkpoint_every": 0,
        "num_workers": 0, "out": str(run_dir),
    })


def data_pixels(trainer: Trainer) -> torch.Tensor:
    """Return the whole data set as uint8 [N, C, H, W] for the minimal loop to hold on the device."""
    data = trainer.data
    if data.pixels is not None:
        return torch.from_numpy(data.pixels)
    if data.packed is not None:
        return torch.from_numpy(data.packed.pixels.copy())
    raise ConfigError(f"the overhead benchmark needs mnist or a packed data set, got {data.name}; "
                      "pack a folder with distgan prepare first")


class MinimalLoop:
    """The GAN loop a user would write by hand: plain modules, plain optimizers, torch RNG, no Accelerate."""

    def __init__(self, trainer: Trainer, args: argparse.Namespace) -> None:
        cfg = trainer.config
        device = trainer.device
        self.G = build_generator(trainer.architecture).to(device)
        self.D = build_discriminator(trainer.architecture).to(device)
        self.G.load_state_dict(trainer.G_inner.state_dict())
        self.D.load_state_dict(trainer.D_inner.state_dict())
        if args.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        if args.compile:
            self.G.compile()
            self.D.compile()
        # The same Adam implementation as the trainer's (fused where it uses fused), so that the
        # comparison measures the loop around the optimizer, not a different optimizer kernel.
        fused = bool(trainer.opt_G.optimizer.defaults.get("fused"))
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2), fused=fused)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), fused=fused)
        self.loss = get_loss(cfg.loss)
        self.pixels = data_pixels(trainer).to(device)
        self.batch_size = args.batch_size
        self.z_dim = cfg.z_dim
        self.device = device
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)
        self.autocast: Callable[[], Any] = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
        )
        # One GradScaler for both optimizers, as Accelerate does; like Accelerate, none on the CPU.
        self.scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 and device.type == "cuda" else None

    def _update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        indices = torch.randint(len(self.pixels), (self.batch_size,), device=self.device)
        real = self.pixels[indices].float().div_(127.5).sub_(1.0)
        z_D = torch.randn(self.batch_size, self.z_dim, device=self.device)
        z_G = torch.randn(self.batch_size, self.z_dim, device=self.device)

        # D phase.
        with torch.no_grad(), self.autocast():
            fake = self.G(z_D)
        with self.autocast():
            logits_real, logits_fake = self.D(torch.cat([real, fake])).split(self.batch_size)
            loss_D = self.loss.d_loss(logits_real.float(), logits_fake.float())
        self._update(loss_D, self.opt_D)

        # G phase.
        with frozen(self.D), self.autocast():
            loss_G = self.loss.g_loss(self.D(self.G(z_G)).float())
        self._update(loss_G, self.opt_G)


def images_per_second(step: Callable[[], None], steps: int, batch_size: int, device: torch.device) -> float:
    """Time `steps` calls of `step` and return images per second, waiting for the device at both ends."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def compare_pair(args: argparse.Namespace, model: str, workdir: Path) -> dict[str, Any]:
    trainer = make_trainer(args, model, workdir / f"run-{model}")
    try:
        minimal = MinimalLoop(trainer, args)
        stats = torch.zeros(len(STAT_NAMES), device=trainer.device)
        next_step = 0

        def distgan_step() -> None:
            nonlocal stats, next_step
            stats += trainer.train_step(next_step)  # the loop accumulates statistics like this between log steps
            next_step += 1

        sides = {"distgan": distgan_step, "minimal": minimal.step}
        for step in sides.values():
            images_per_second(step, args.warmup, args.batch_size, trainer.device)
        measured: dict[str, list[float]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            order = ("distgan", "minimal") if repeat % 2 == 0 else ("minimal", "distgan")
            for name in order:
                measured[name].append(images_per_second(sides[name], args.steps, args.batch_size, trainer.device))
    finally:
        trainer.close()
    distgan, minimal = summarize(measured["distgan"]), summarize(measured["minimal"])
    ratio = distgan["median"] / minimal["median"]
    block_ratios = summarize([a / b for a, b in zip(measured["distgan"], measured["minimal"])])
    return {
        "pair": model,
        "distgan img/s": distgan["median"],
        "minimal img/s": minimal["median"],
        "ratio": ratio,
        "ratio p25": block_ratios["p25"],
        "ratio p75": block_ratios["p75"],
        "target": f">= {TARGET_RATIO}",
        "meets target": ratio >= TARGET_RATIO,
        "samples": measured,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    apply_quick(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [name.strip() for name in args.pairs.split(",") if name.strip()]
    with tempfile.TemporaryDirectory(prefix="distgan-overhead-") as workdir:
        results = [compare_pair(args, model, Path(workdir)) for model in models]
    rows = [{key: value for key, value in result.items() if key != "samples"} for result in results]
    return {
        "title": f"Trainer overhead: distgan step vs minimal loop ({args.device}, batch {args.batch_size}, "
                 f"mixed precision {args.mixed_precision}{', compile' if args.compile else ''})",
        "rows": rows,
        "samples": {result["pair"]: result["samples"] for result in results},
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "notes": [f"ratio of medians over {args.repeats} alternated blocks of {args.steps} steps per side after "
                  f"{args.warmup} warm-up steps; p25 and p75 of the ratios of neighbouring blocks; "
                  f"torch threads {torch.get_num_threads()}; EMA and R1 off on both sides"],
    }


if __name__ == "__main__":
    script_main("overhead", build_parser, run)
