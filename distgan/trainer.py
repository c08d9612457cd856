"""The alternating discriminator/generator loop on Hugging Face Accelerate.

G and D are prepared as two separate models, so under DDP each has its own
wrapper and its own gradient all-reduce, and neither needs
find_unused_parameters. One step is a D phase then a G phase:

- D phase: G runs under no_grad, so there are no G gradients and no G
  all-reduce. D takes real and fake samples in one forward pass.
- G phase: D runs as its inner module with its parameters frozen, so autograd
  computes no D parameter gradients and DDP all-reduces nothing of D.

Every random draw is a function of (seed, step) over the global batch (see
distgan.seeding), so the result does not depend on the number of processes,
and resuming from a checkpoint continues exactly.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch import nn
from tqdm.auto import tqdm

from distgan import __version__
from distgan.checkpoint import checkpoint_name, load_checkpoint, save_checkpoint
from distgan.config import TrainConfig, save_toml
from distgan.data import DataSet
from distgan.data.mixtures import MIXTURES, get_mixture
from distgan.distributed import check_launch, use_cpu
from distgan.ema import GeneratorEMA
from distgan.errors import CheckpointError, ConfigError
from distgan.imaging import save_grid, save_scatter
from distgan.losses import get_loss
from distgan.models import build_discriminator, build_generator, default_architecture
from distgan.performance import apply_speed_options
from distgan.run import CONFIG_FILE
from distgan.seeding import derive_seed, global_latents, rank_slice, seed_device_rng
from distgan.tracking import JsonlTracker, truncate_metrics

logger = get_logger(__name__)

SAMPLE_GRID_SIZE = 64  # images in each samples/step-NNNNNNN.png
SAMPLE_POINTS = 2000  # points in each scatter plot of a 2D run
STATS = ("Loss/D", "Loss/G", "Logits/real", "Logits/fake")


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn off requires_grad for the parameters of `module` inside the block."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


@dataclass
class TrainResult:
    """Outcome of a finished run: its directory, the last step and the last logged statistics."""

    run_dir: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Train a GAN described by a resolved TrainConfig on a DataSet.

    `generator` and `discriminator` replace the built-in pair with any
    nn.Module pair: G maps z [B, z_dim] to samples [B, *data.sample_shape] and
    D maps samples to logits [B]. Export then needs the generator module
    itself, because a custom class cannot be rebuilt from JSON.
    """

    def __init__(self, config: TrainConfig, data: DataSet, *, generator: nn.Module | None = None,
                 discriminator: nn.Module | None = None, resume_from: Path | None = None) -> None:
        if (generator is None) != (discriminator is None):
            raise ConfigError("pass both a generator and a discriminator, or neither")
        self.config = config
        self.data = data
        self.resume_from = resume_from
        self.run_dir = config.run_dir
        self.custom_modules = (generator, discriminator) if generator is not None else None

    # Set-up.

    def _build_models(self) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
        cfg = self.config
        # The same seed on every rank gives identical initial weights before DDP's broadcast.
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        if self.custom_modules is not None:
            G, D = self.custom_modules
            G_class = type(G)
            architecture = {"model": "custom", "class": f"{G_class.__module__}.{G_class.__qualname__}"}
            return G, D, architecture
        architecture = default_architecture(cfg.model, self.data.kind, self.data.sample_shape, cfg.z_dim, cfg.width)
        return build_generator(architecture), build_discriminator(architecture), architecture

    def _check_shapes(self, G: nn.Module, D: nn.Module) -> None:
        z = torch.zeros(2, self.config.z_dim, device=self.device)
        was_training = G.training
        G.eval()
        with torch.no_grad():
            fake = G(z)
            expected = [2, *self.data.sample_shape]
            if list(fake.shape) != expected:
                raise ConfigError(f"the generator returned shape {list(fake.shape)} for z of shape {list(z.shape)}; "
                                  f"expected {expected} to match the data")
            logits = D(fake)
            if list(logits.shape) != [2]:
                raise ConfigError(f"the discriminator returned shape {list(logits.shape)} for 2 samples; expected [2]")
        G.train(was_training)

    def _generator_record(self, step: int) -> dict[str, Any]:
        cfg, data = self.config, self.data
        return {
            "format": "distgan-generator",
            "format_version": 1,
            "distgan_version": __version__,
            "architecture": {key: value for key, value in self.architecture.items() if key != "discriminator"},
            "kind": data.kind,
            "z_dim": cfg.z_dim,
            "sample_shape": list(data.sample_shape),
            "value_range": [-1.0, 1.0] if data.kind == "image" else None,
            "layout": "NCHW" if data.kind == "image" else "N2",
            "class_names": list(data.class_names),
            "data": data.name,
            "seed": cfg.seed,
            "step": step,
            "weights": "G_ema" if self.G_ema is not None else "G",
        }

    # Training.

    def fit(self) -> TrainResult:
        """Train until config.steps, writing metrics, samples and checkpoints into the run directory."""
        start_step = self.setup()
        try:
            metrics = self._loop(start_step)
        finally:
            self.close()
        return TrainResult(self.run_dir, self.config.steps, metrics)

    def setup(self) -> int:
        """Create the Accelerator, models, optimizers and batch source, resuming if asked; return the first step.

        fit() calls it. A caller that drives train_step() itself (a benchmark,
        for example) calls setup(), then train_step() for each step, then close().
        Raises ConfigError for a batch size that does not divide among the processes.
        """
        cfg = self.config
        check_launch()
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=use_cpu(cfg.cpu),
                                  log_with=[JsonlTracker(self.run_dir)])
        self.accelerator = accelerator
        self.device = accelerator.device
        world_size = accelerator.num_processes
        if cfg.batch_size % world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} is the global batch and must divide evenly among "
                              f"{world_size} processes; choose a multiple of {world_size}")
        cfg = self.config = cfg.replace(mixed_precision=accelerator.mixed_precision)

        G, D, self.architecture = self._build_models()
        G.to(self.device)
        D.to(self.device)
        self._check_shapes(G, D)
        self.G_ema = GeneratorEMA(G, cfg.ema_decay) if cfg.ema else None
        apply_speed_options(cfg, G, D, self.G_ema)
        opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.G, self.D, self.opt_G, self.opt_D = accelerator.prepare(G, D, opt_G, opt_D)
        self.G_inner = accelerator.unwrap_model(self.G)
        self.D_inner = accelerator.unwrap_model(self.D)
        self.loss = get_loss(cfg.loss)

        start_step = self._load(self.resume_from) if self.resume_from else 0
        if accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_toml(cfg, self.run_dir / CONFIG_FILE)
            truncate_metrics(self.run_dir, start_step)
        accelerator.init_trackers(cfg.name, config={k: v for k, v in cfg.to_dict().items() if v is not None})

        self.source = self.data.source(seed=cfg.seed, global_batch=cfg.batch_size, rank=accelerator.process_index,
                                       world_size=world_size, device=self.device, end_step=cfg.steps,
                                       num_workers=cfg.num_workers)
        self.local_rows = rank_slice(cfg.batch_size, accelerator.process_index, world_size)
        return start_step

    def close(self) -> None:
        """Release the batch source and finish the trackers."""
        self.source.close()
        self.accelerator.end_training()

    def train_step(self, step: int) -> torch.Tensor:
        """Run training step `step` after setup(): one D update and one G update on this rank's slice.

        Returns the step's statistics as a float32 device tensor [len(STATS)]
        in the order of STATS, without a host synchronization.
        """
        return self._train_step(step)

    def _loop(self, start_step: int) -> dict[str, float]:
        cfg, accelerator = self.config, self.accelerator
        if start_step >= cfg.steps:
            logger.info("the run is already at step %d of %d; nothing to train", start_step, cfg.steps)
            return {}
        logger.info("training %s (%s) on %d process(es), %s, global batch %d, steps %d to %d",
                    cfg.name, cfg.model, accelerator.num_processes, self.device, cfg.batch_size, start_step, cfg.steps)
        stats = torch.zeros(len(STATS), device=self.device)
        stats_steps = 0
        metrics: dict[str, float] = {}
        interval_start = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=start_step, unit="step", dynamic_ncols=True,
                   disable=not accelerator.is_main_process)
        for step in range(start_step, cfg.steps):
            stats += self._train_step(step)
            stats_steps += 1
            done = step + 1
            bar.update(1)

            if done % cfg.log_every == 0 or done == cfg.steps:
                elapsed = time.perf_counter() - interval_start
                metrics = self._log(done, stats / stats_steps, stats_steps * cfg.batch_size / elapsed)
                bar.set_postfix({"D": f"{metrics['Loss/D']:.3f}", "G": f"{metrics['Loss/G']:.3f}",
                                 "img/s": f"{metrics['images_per_second']:.0f}"})
                stats.zero_()
                stats_steps = 0
                interval_start = time.perf_counter()
            if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
                self._write_samples(done)
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps:
                self._save(done)
        bar.close()
        return metrics

    def _latents(self, stream: str, step: int) -> torch.Tensor:
        cfg = self.config
        return global_latents(cfg.seed, stream, step, cfg.batch_size, cfg.z_dim, self.device)[self.local_rows]

    def _train_step(self, step: int) -> torch.Tensor:
        """Run one D phase and one G phase; return the step's statistics as a device tensor (no host sync)."""
        accelerator, loss = self.accelerator, self.loss
        # Randomness inside the models (dropout, for example) follows (seed, step, rank) too.
        seed_device_rng(derive_seed(self.config.seed, "step", step, accelerator.process_index), self.device)
        real, _ = self.source.batch(step)
        z_D = self._latents("z/D", step)
        z_G = self._latents("z/G", step)

        # D phase.
        with torch.no_grad():
            fake = self.G(z_D)
        logits = self.D(torch.cat([real, fake]))
        logits_real, logits_fake = logits.split(len(real))
        loss_D = loss.d_loss(logits_real, logits_fake)
        accelerator.backward(loss_D)
        self.opt_D.step()
        self.opt_D.zero_grad(set_to_none=True)

        # G phase.
        with frozen(self.D_inner):
            loss_G = loss.g_loss(self.D_inner(self.G(z_G)))
            accelerator.backward(loss_G)
        self.opt_G.step()
        self.opt_G.zero_grad(set_to_none=True)
        if self.G_ema is not None:
            self.G_ema.update(self.G_inner, step)

        return torch.stack([loss_D, loss_G, logits_real.mean(), logits_fake.mean()]).detach().float()

    # Logging, samples and checkpoints.

    def _log(self, step: int, mean_stats: torch.Tensor, images_per_second: float) -> dict[str, float]:
        values = self.accelerator.reduce(mean_stats, reduction="mean").tolist()
        metrics = dict(zip(STATS, values))
        metrics["images_per_second"] = images_per_second
        self.accelerator.log(metrics, step=step)
        return metrics

    def _write_samples(self, step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        cfg = self.config
        count = SAMPLE_GRID_SIZE if self.data.kind == "image" else SAMPLE_POINTS
        # The same latents at every step, so the grids show how training moves one batch.
        z = global_latents(cfg.seed, "samples", 0, count, cfg.z_dim, self.device)
        path = self.run_dir / "samples" / f"{checkpoint_name(step)}.png"
        generator = self.G_ema.module if self.G_ema is not None else self.G_inner
        was_training = generator.training
        generator.eval()
        with torch.no_grad():
            samples = generator(z).float().cpu().numpy()
        generator.train(was_training)
        if self.data.kind == "image":
            save_grid(samples, path)
        else:
            centers = get_mixture(self.data.name).centers.numpy() if self.data.name in MIXTURES else None
            save_scatter(samples, path, centers)

    def _save(self, step: int) -> None:
        accelerator = self.accelerator
        # get_state_dict gathers sharded weights, so every rank takes part.
        models = {"G": accelerator.get_state_dict(self.G), "D": accelerator.get_state_dict(self.D)}
        if self.G_ema is not None:
            models["G_ema"] = self.G_ema.state_dict()
        if accelerator.is_main_process:
            optimizers = {"optimizer_G": self.opt_G.state_dict(), "optimizer_D": self.opt_D.state_dict()}
            if accelerator.scaler is not None:
                optimizers["scaler"] = accelerator.scaler.state_dict()
            extra = {"distgan_version": __version__, "world_size": accelerator.num_processes}
            record = self._generator_record(step)
            path = save_checkpoint(self.run_dir, step, models, optimizers, record, record["weights"], extra)
            logger.info("saved checkpoint %s", path)
        accelerator.wait_for_everyone()

    def _load(self, path: Path) -> int:
        models, optimizers, state = load_checkpoint(path)
        self.G_inner.load_state_dict(models["G"])
        self.D_inner.load_state_dict(models["D"])
        if self.G_ema is not None:
            if "G_ema" not in models:
                raise CheckpointError(f"checkpoint {path} has no G_ema weights; resume with --no-ema")
            self.G_ema.load_state_dict(models["G_ema"])
        self.opt_G.load_state_dict(optimizers["optimizer_G"])
        self.opt_D.load_state_dict(optimizers["optimizer_D"])
        if self.accelerator.scaler is not None and "scaler" in optimizers:
            self.accelerator.scaler.load_state_dict(optimizers["scaler"])
        logger.info("resumed from %s at step %d", path, state["step"])
        return int(state["step"])
