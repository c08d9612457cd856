"""The alternating discriminator/generator training loop on Hugging Face Accelerate.

G and D are prepared as two separate models, so under DDP each has its own
wrapper and its own gradient all-reduce, and neither needs
find_unused_parameters. distgan.step runs the two phases of a step; this
module sets up the run, draws each step's inputs, and logs, samples and
saves.

Every random draw is a function of (seed, step) over the global batch (see
distgan.seeding), so the result does not depend on the number of processes,
and resuming from a checkpoint continues exactly.
"""

from __future__ import annotations

import datetime
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, InitProcessGroupKwargs, parse_flag_from_env
from torch import nn
from tqdm.auto import tqdm

from distgan import __version__
from distgan.augment import DiffAugment
from distgan.checkpoint import (
    CHECKPOINTS,
    GENERATOR,
    GENERATOR_RECORD,
    checkpoint_name,
    load_checkpoint,
    read_generator_record,
    remove_stale_temporaries,
    save_checkpoint,
)
from distgan.config import TrainConfig, parse_policy, save_toml
from distgan.data import DataSet
from distgan.data.mixtures import MIXTURES, get_mixture
from distgan.distributed import (
    broadcast_status,
    check_launch,
    check_resume_step,
    init_restart_safe_process_group,
    is_collective_failure,
    use_cpu,
)
from distgan.ema import GeneratorEMA
from distgan.errors import CheckpointError, CollectiveError, ConfigError, TrainingError
from distgan.imaging import save_grid, save_scatter
from distgan.losses import get_loss
from distgan.lr_decay import decay_factor, set_learning_rate
from distgan.models import apply_spectral_norm, build_discriminator, build_generator, default_architecture
from distgan.models.sync_batchnorm import convert_batchnorm
from distgan.performance import apply_speed_options
from distgan.retention import prune_checkpoints
from distgan.run import CONFIG_FILE, release_run_dir
from distgan.seeding import derive_seed, global_latents, local_rows, make_generator, seed_device_rng
from distgan.sharding import check_sharding, gather_model, gather_optimizer, load_model, load_optimizer, local, shard
from distgan.step import (D_COUNT, GOOD_COUNT, R1_COUNT, SKIPPED, STAT_NAMES, AdversarialStep, MicroBatch, Penalties,
                          run_model)
from distgan.tracking import JsonlTracker, truncate_metrics

logger = get_logger(__name__)

SAMPLE_GRID_SIZE = 64  # images in each samples/step-NNNNNNN.png
SAMPLE_POINTS = 2000  # points in each scatter plot of a 2D run
# NOTE: FSDP and DeepSpeed would need a sharded EMA, sharded optimizer checkpoints and a G phase
# that gathers D's shards. None of that exists yet, and Accelerate enables them only on GPUs.
UNSUPPORTED_DISTRIBUTED_TYPES = (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
# Status codes that the main process sends to the other ranks after a save (see distributed.broadcast_status).
SAVE_OK, SAVE_FAILED_CONTINUE, SAVE_FAILED_STOP = 0, 1, 2


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
    D maps samples to logits [B]. With config.conditional both also take the
    labels int64 [B] as a second argument: G(z, labels), D(x, labels). Export
    then needs the generator module itself, because a custom class cannot be
    rebuilt from JSON.

    `fit()` runs everything. For finer control, `setup()` prepares the models
    and returns the first step, and `train_step(step)` runs one step.
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
        self.last_checkpoint = resume_from  # named in the error when a peer is lost
        self.current_step = 0

    # Set-up.

    def _build_models(self) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
        cfg = self.config
        # The same seed on every rank gives identical initial weights before DDP's broadcast.
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        if self.custom_modules is not None:
            G, D = self.custom_modules
            G_class = type(G)
            architecture = {"model": "custom", "class": f"{G_class.__module__}.{G_class.__qualname__}"}
        else:
            architecture = default_architecture(cfg.model, self.data.kind, self.data.sample_shape, cfg.z_dim,
                                                cfg.width, self.num_classes, cfg.depth)
            try:
                G, D = build_generator(architecture), build_discriminator(architecture)
            except (MemoryError, RuntimeError) as error:  # torch's allocators raise RuntimeError
                if not isinstance(error, MemoryError) and "allocate" not in str(error):
                    raise
                raise ConfigError(f"not enough memory for the {cfg.model} pair of width {cfg.width} and depth "
                                  f"{cfg.depth}; lower --width or --depth") from None
        if cfg.spectral_norm:
            D = apply_spectral_norm(D)
        if cfg.sync_bn:
            G, D = convert_batchnorm(G), convert_batchnorm(D)
        return G.to(self.device), D.to(self.device), architecture

    @property
    def num_classes(self) -> int:
        """The number of classes that G and D are conditioned on; 0 for an unconditional run."""
        return len(self.data.class_names) if self.config.conditional else 0

    def _check_shapes(self, G: nn.Module, D: nn.Module) -> None:
        z = torch.zeros(2, self.config.z_dim, device=self.device)
        labels = torch.zeros(2, dtype=torch.int64, device=self.device) if self.num_classes else None
        was_training = G.training
        G.eval()
        with torch.no_grad():
            fake = run_model(G, z, labels)
            expected = [2, *self.data.sample_shape]
            if list(fake.shape) != expected:
                raise ConfigError(f"the generator returned shape {list(fake.shape)} for z of shape {list(z.shape)}; "
                                  f"expected {expected} to match the data")
            logits = run_model(D, fake, labels)
            if list(logits.shape) != [2]:
                raise ConfigError(f"the discriminator returned shape {list(logits.shape)} for 2 samples; expected [2]")
        G.train(was_training)

    def _optimizer(self, module: nn.Module, lr: float) -> torch.optim.Optimizer:
        cfg = self.config
        # Fused Adam skips a step on the device through its found_inf input, so a non-finite step costs no
        # host synchronization. The fp16 GradScaler needs the plain version to report skipped steps.
        fused = cfg.mixed_precision != "fp16"
        return torch.optim.Adam(module.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2), fused=fused)

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
            "num_classes": self.num_classes,
            "data": data.name,
            "seed": cfg.seed,
            "step": step,
            "weights": "G_ema" if self.G_ema is not None else "G",
        }

    def setup(self) -> int:
        """Create the Accelerator, models, optimizers and batch source, resuming if asked; return the first step.

        fit() calls it. A caller that drives train_step() itself (a benchmark,
        for example) calls setup(), then train_step() for each step, then close().
        Raises ConfigError for a batch size that does not divide among the processes.
        """
        check_launch()
        cfg = self.config
        timeout = datetime.timedelta(seconds=cfg.collective_timeout)
        init_restart_safe_process_group(use_cpu(cfg.cpu), timeout)
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=use_cpu(cfg.cpu),
                                  log_with=[JsonlTracker(self.run_dir)],
                                  kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)])
        self.accelerator = accelerator
        self.device = accelerator.device
        if accelerator.distributed_type in UNSUPPORTED_DISTRIBUTED_TYPES:
            raise ConfigError(
                f"Accelerate is configured for {accelerator.distributed_type.value}, which distgan does not support: "
                "it trains G and D as two DDP or two FSDP models. Use a config such as launch/multi_gpu.yaml "
                "or launch/fsdp.yaml."
            )
        world_size = accelerator.num_processes
        if cfg.batch_size % world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} is the global batch of one micro-batch and must divide "
                              f"evenly among {world_size} processes; choose a multiple of {world_size}")
        if accelerator.mixed_precision == "fp16" and self.device.type == "cpu":
            raise ConfigError("--mixed-precision fp16 needs a GPU: on the CPU Accelerate applies neither fp16 "
                              "autocast nor a GradScaler, so the run would silently be float32. Use bf16 or no.")
        # An Accelerate FSDP config turns sharding on; the resolved config records it for resume. On CPU
        # processes Accelerate 1.16 ignores the config's FSDP setting, so its launcher's variable is read too.
        fsdp = (cfg.fsdp or accelerator.distributed_type == DistributedType.FSDP
                or parse_flag_from_env("ACCELERATE_USE_FSDP"))
        cfg = self.config = cfg.replace(mixed_precision=accelerator.mixed_precision, fsdp=fsdp)
        if fsdp:
            check_sharding(cfg, world_size)

        G, D, self.architecture = self._build_models()
        self._check_shapes(G, D)
        self.G_ema = GeneratorEMA(G, cfg.ema_decay) if cfg.ema else None
        apply_speed_options(cfg, G, D, self.G_ema)
        if cfg.fsdp:
            # Sharded models are not wrapped by Accelerate (see distgan.sharding); the optimizers are made
            # after fully_shard, which replaces the parameters with sharded ones.
            for module in (G, D, self.G_ema.module if self.G_ema is not None else None):
                if module is not None:
                    shard(module, self.device, world_size)
            self.G, self.D = G, D
            self.opt_G, self.opt_D = self._optimizer(G, cfg.lr_g), self._optimizer(D, cfg.lr_d)
        else:
            opt_G, opt_D = self._optimizer(G, cfg.lr_g), self._optimizer(D, cfg.lr_d)
            self.G, self.D, self.opt_G, self.opt_D = accelerator.prepare(G, D, opt_G, opt_D)
        self.G_inner = accelerator.unwrap_model(self.G)
        self.D_inner = accelerator.unwrap_model(self.D)
        loss = get_loss(cfg.loss)
        penalties = Penalties(cfg.r1_gamma, cfg.r1_every, cfg.gp_weight if loss.gradient_penalty else 0.0)
        policy = parse_policy(cfg.augment)
        self.augment = DiffAugment(policy, self.data.sample_shape[-1]) if policy else None
        self.step_runner = AdversarialStep(accelerator, self.G, self.D, self.opt_G, self.opt_D, loss, penalties,
                                           self.G_ema, self.augment, conditional=self.num_classes > 0,
                                           autocast=cfg.fsdp)

        if accelerator.is_main_process:
            # No save is running yet, so every temporary here was left by an interrupted one.
            remove_stale_temporaries(self.run_dir / CHECKPOINTS)
            remove_stale_temporaries(self.run_dir / GENERATOR)
        start_step = self._load(self.resume_from) if self.resume_from else 0
        check_resume_step(accelerator, start_step)
        self.current_step = start_step
        if accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_toml(cfg, self.run_dir / CONFIG_FILE)
            truncate_metrics(self.run_dir, start_step)
        accelerator.init_trackers(cfg.name, config={k: v for k, v in cfg.to_dict().items() if v is not None})

        self.step_batch = cfg.batch_size * cfg.grad_accum
        self.rows = local_rows(self.step_batch, cfg.grad_accum, accelerator.process_index, world_size).to(self.device)
        self.source = self.data.source(seed=cfg.seed, global_batch=self.step_batch, rank=accelerator.process_index,
                                       world_size=world_size, device=self.device, end_step=cfg.steps,
                                       num_workers=cfg.num_workers, micro_batches=cfg.grad_accum)
        self._skip_streak = torch.zeros((), device=self.device)
        self._weights_checked_at = start_step  # the last step whose weights were found finite
        self._streak_start = torch.zeros((), device=self.device)
        return start_step

    # Training.

    def fit(self) -> TrainResult:
        """Train until config.steps, writing metrics, samples and checkpoints into the run directory."""
        try:
            start_step = self.setup()
            metrics = self._loop(start_step)
        except RuntimeError as error:
            if not is_collective_failure(error):
                raise
            raise self._collective_error(error) from None
        finally:
            self.close()
        return TrainResult(self.run_dir, self.config.steps, metrics)

    def _collective_error(self, error: RuntimeError) -> CollectiveError:
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        latest = self.last_checkpoint.name if self.last_checkpoint is not None else "none yet"
        return CollectiveError(
            f"process {self.accelerator.process_index} lost contact with the other processes of the run during "
            f"step {self.current_step + 1}: {reason}. Another process or node stopped, or the network failed "
            f"(a silent peer counts as lost after --collective-timeout {self.config.collective_timeout} s). "
            f"The latest complete checkpoint is {latest}; start the same command again on every node to resume "
            "from it."
        )

    def close(self) -> None:
        """Stop the data workers, drop the DDP wrappers and end the process group, in that order.

        The wrappers go first. A DDP reducer that outlives the process group
        destroys it during garbage collection while holding the GIL. gloo's
        worker thread needs the GIL to finish, so the process hangs at exit
        (seen with torch 2.13 on CPU). It also runs after a set-up that failed
        halfway, and skips what does not exist yet.
        """
        progress_bar = self.__dict__.pop("_progress_bar", None)
        if progress_bar is not None:
            progress_bar.close()
        source = self.__dict__.pop("source", None)
        if source is not None:
            source.close()
        for name in ("step_runner", "G", "D", "G_inner", "D_inner", "opt_G", "opt_D"):
            self.__dict__.pop(name, None)
        release_run_dir(self.run_dir)
        accelerator = self.__dict__.get("accelerator")
        if accelerator is None:
            return
        accelerator.free_memory()
        gc.collect()
        accelerator.end_training()

    def _loop(self, start_step: int) -> dict[str, float]:
        cfg, accelerator = self.config, self.accelerator
        if start_step >= cfg.steps:
            logger.info("the run is already at step %d of %d; nothing to train", start_step, cfg.steps)
            return {}
        logger.info("training %s (%s) on %d process(es), %s, global batch %d x %d micro-batches, steps %d to %d",
                    cfg.name, cfg.model, accelerator.num_processes, self.device, cfg.batch_size, cfg.grad_accum,
                    start_step, cfg.steps)
        sums = torch.zeros(len(STAT_NAMES), device=self.device)
        steps_in_interval = 0
        metrics: dict[str, float] = {}
        interval_start = time.perf_counter()
        # close() closes the bar too, so that an error message after a failed step starts on a line of its own.
        bar = self._progress_bar = tqdm(total=cfg.steps, initial=start_step, unit="step", dynamic_ncols=True,
                                        disable=not accelerator.is_main_process)
        for step in range(start_step, cfg.steps):
            self.current_step = step
            sums += self.train_step(step)
            steps_in_interval += 1
            done = step + 1
            bar.update(1)

            if done % cfg.log_every == 0 or done == cfg.steps:
                elapsed = time.perf_counter() - interval_start
                metrics = self._log(done, sums, steps_in_interval * self.step_batch / elapsed)
                bar.set_postfix({"D": f"{metrics['Loss/D']:.3f}", "G": f"{metrics['Loss/G']:.3f}",
                                 "img/s": f"{metrics['images_per_second']:.0f}"})
                sums.zero_()
                steps_in_interval = 0
                interval_start = time.perf_counter()
            if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
                self._write_samples(done)
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps:
                self._check_skip_streak(done)
                self._save(done)
        bar.close()
        return metrics

    def step_inputs(self, step: int) -> list[MicroBatch]:
        """Draw this rank's share of step `step`: real samples, labels, latents, split into micro-batches.

        The WGAN-GP weights and the augmentation parameters are drawn for the
        global batch too, and this rank takes its rows.
        """
        cfg = self.config
        parts = cfg.grad_accum
        real, labels = self.source.batch(step)
        z_D = global_latents(cfg.seed, "z/D", step, self.step_batch, cfg.z_dim, self.device)[self.rows]
        z_G = global_latents(cfg.seed, "z/G", step, self.step_batch, cfg.z_dim, self.device)[self.rows]
        batches = [MicroBatch(*fields) for fields in zip(real.chunk(parts), labels.chunk(parts), z_D.chunk(parts),
                                                          z_G.chunk(parts))]
        if self.step_runner.penalties.gp_weight > 0:
            generator = make_generator(cfg.seed, "gp/mix", step, device=self.device)
            mix = torch.rand(self.step_batch, generator=generator, device=self.device)[self.rows].chunk(parts)
            for batch, weights in zip(batches, mix):
                batch.mix = weights
        if self.augment is not None:
            for stream in ("augment_real", "augment_fake_D", "augment_fake_G"):
                params = self.augment.draw(cfg.seed, stream, step, self.step_batch, self.device)
                for batch, local in zip(batches, params.select(self.rows).chunk(parts)):
                    setattr(batch, stream, local)
        return batches

    def train_step(self, step: int) -> torch.Tensor:
        """Run step `step`; return its statistics (see distgan.step.STAT_NAMES) on the device, with no host sync."""
        cfg = self.config
        # Randomness inside the models (dropout, for example) follows (seed, step, rank) too.
        seed_device_rng(derive_seed(cfg.seed, "step", step, self.accelerator.process_index), self.device)
        if cfg.lr_decay_start < 1.0:
            factor = decay_factor(step, cfg.steps, cfg.lr_decay_start)
            set_learning_rate(self.opt_G, cfg.lr_g * factor)
            set_learning_rate(self.opt_D, cfg.lr_d * factor)
        stats = self.step_runner.run(step, self.step_inputs(step))
        skipped = stats[SKIPPED]
        self._skip_streak = (self._skip_streak + 1) * skipped
        # Steps are reported as counts of completed steps, like checkpoints: step index 0 is "step 1".
        self._streak_start = torch.where((self._skip_streak == 1), float(step + 1), self._streak_start)
        return stats

    # Logging, samples and checkpoints.

    def _check_skip_streak(self, step: int) -> None:
        """Stop the run when the last max_skipped_steps steps or more all had non-finite losses.

        Every rank has the same streak because each skip decision is all-reduced, so
        all ranks stop at the same step and none waits in a collective.
        """
        streak = int(self._skip_streak.item())
        limit = self.config.max_skipped_steps
        if limit and streak >= limit:
            first = int(self._streak_start.item())
            raise TrainingError(
                f"training stopped at step {step}: steps {first} to {step} ({streak} in a row) all had non-finite "
                f"losses and were skipped (max_skipped_steps = {limit}). No non-finite update was "
                "applied to any weight, and the latest checkpoint is intact. Lower the learning rates, check the data, or use "
                "--mixed-precision no."
            )

    def _nonfinite_weights(self) -> torch.Tensor:
        """Return [G, D] on the device: 1.0 for a model with a NaN or Inf parameter or buffer, else 0.0."""
        flags = []
        for module in (self.G_inner, self.D_inner):
            tensors = [local(t) for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
            flags.append(torch.stack([torch.isfinite(t).all() for t in tensors]).all().logical_not().float())
        return torch.stack(flags)

    def _log(self, step: int, sums: torch.Tensor, images_per_second: float) -> dict[str, float]:
        # The weight check joins the reduction that logging does anyway, so every rank gets every rank's result.
        reduced = self.accelerator.reduce(torch.cat([sums, self._nonfinite_weights()]), reduction="mean").tolist()
        totals, weights_bad = reduced[:len(STAT_NAMES)], reduced[len(STAT_NAMES):]
        bad = [name for name, flag in zip(("G", "D"), weights_bad) if flag > 0]
        if bad:
            raise TrainingError(
                f"training stopped at step {step}: the weights or buffers of {' and '.join(bad)} turned NaN or Inf "
                f"after step {self._weights_checked_at}, while every applied step had a finite loss (a gradient "
                "that overflowed in the backward pass, or a buffer updated from non-finite values). Nothing "
                "non-finite was saved, and the latest checkpoint is intact. Lower the learning rates, check the "
                "data, or check a custom model's backward pass."
            )
        self._weights_checked_at = step
        # An interval of skipped steps only has no losses: NaN, written as null in metrics.jsonl.
        good = totals[GOOD_COUNT] or float("nan")
        good_D = totals[D_COUNT] or float("nan")
        metrics = {name: totals[index] / (good if name == "Loss/G" else good_D)
                   for index, name in enumerate(STAT_NAMES[:4])}
        if totals[R1_COUNT]:
            metrics["Loss/D/r1"] = totals[4] / totals[R1_COUNT]
        if self.step_runner.penalties.gp_weight:
            metrics["Loss/D/gp"] = totals[5] / good_D
        metrics["Train/skipped_steps"] = totals[SKIPPED]
        metrics["images_per_second"] = images_per_second
        self.accelerator.log(metrics, step=step)
        self._check_skip_streak(step)
        return metrics

    def _write_samples(self, step: int) -> None:
        # Sharded models run their forward pass on every process together; the main process writes the grid.
        if not self.accelerator.is_main_process and not self.config.fsdp:
            return
        cfg = self.config
        count = SAMPLE_GRID_SIZE if self.data.kind == "image" else SAMPLE_POINTS
        columns = None
        labels = None
        if self.num_classes:
            # One column per class, and as many rows as fill SAMPLE_GRID_SIZE images.
            columns = self.num_classes
            count = columns * max(1, round(SAMPLE_GRID_SIZE / columns))
            labels = torch.arange(count, device=self.device) % columns
        # The same latents at every step, so the grids show how training moves one batch.
        z = global_latents(cfg.seed, "samples", 0, count, cfg.z_dim, self.device)
        path = self.run_dir / "samples" / f"{checkpoint_name(step)}.png"
        generator = self.G_ema.module if self.G_ema is not None else self.G_inner
        was_training = generator.training
        generator.eval()
        with torch.no_grad():
            samples = run_model(generator, z, labels).float().cpu().numpy()
        generator.train(was_training)
        if not self.accelerator.is_main_process:
            return
        try:
            if self.data.kind == "image":
                save_grid(samples, path, columns)
            else:
                centers = get_mixture(self.data.name).centers.numpy() if self.data.name in MIXTURES else None
                save_scatter(samples, path, centers)
        except OSError as error:
            # Samples are previews that nothing reads back; a full disk stops the run at the next checkpoint.
            logger.warning("cannot write the sample grid %s: %s; training continues", path, error)

    def _save(self, step: int) -> None:
        """Save the checkpoint of `step` on the main process; every rank learns whether it worked.

        A failure raises on every rank, or, for a checkpoint that could not be
        written under --on-save-error continue, logs a warning and lets the
        run go on (except at the last step, whose checkpoint is the result).
        """
        accelerator = self.accelerator
        # Gathering sharded weights and optimizer states is a collective, so every rank takes part.
        models, optimizers = self._gather_state()
        failure: TrainingError | CheckpointError | None = None
        status = SAVE_OK
        if accelerator.is_main_process:
            try:
                self._write_checkpoint(step, models, optimizers)
            except (TrainingError, CheckpointError) as error:
                failure = error
                may_continue = (isinstance(error, CheckpointError) and self.config.on_save_error == "continue"
                                and step < self.config.steps)
                status = SAVE_FAILED_CONTINUE if may_continue else SAVE_FAILED_STOP
        status = broadcast_status(accelerator, status)
        if status == SAVE_OK:
            self.last_checkpoint = self.run_dir / CHECKPOINTS / checkpoint_name(step)
        elif status == SAVE_FAILED_CONTINUE:
            logger.warning("%s Training continues (--on-save-error continue); the next checkpoint tries again.",
                           failure)
        elif failure is not None:
            raise failure
        else:
            raise TrainingError(f"the main process could not save the checkpoint of step {step}; "
                                "its error message gives the cause")

    def _gather_state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, Any]]]:
        """Return the model and optimizer state dicts to save; full tensors on the main process."""
        if not self.config.fsdp:
            models = {"G": self.accelerator.get_state_dict(self.G), "D": self.accelerator.get_state_dict(self.D)}
            if self.G_ema is not None:
                models["G_ema"] = self.G_ema.state_dict()
            optimizers = {"optimizer_G": self.opt_G.state_dict(), "optimizer_D": self.opt_D.state_dict()}
            return models, optimizers
        models = {"G": gather_model(self.G), "D": gather_model(self.D)}
        if self.G_ema is not None:
            models["G_ema"] = gather_model(self.G_ema.module)
        optimizers = {"optimizer_G": gather_optimizer(self.G, self.opt_G),
                      "optimizer_D": gather_optimizer(self.D, self.opt_D)}
        return models, optimizers

    def _write_checkpoint(self, step: int, models: dict[str, dict[str, torch.Tensor]],
                          optimizers: dict[str, dict[str, Any]]) -> None:
        """Check the weights, write the checkpoint and apply the retention. Main process only."""
        accelerator = self.accelerator
        for name, state in models.items():
            bad = [key for key, tensor in state.items() if tensor.is_floating_point() and
                   not bool(torch.isfinite(tensor).all())]
            if bad:
                raise TrainingError(f"refusing to save step {step}: {name} has non-finite values in "
                                    f"{', '.join(bad[:5])}; the latest checkpoint is intact")
        if accelerator.scaler is not None:
            optimizers["scaler"] = accelerator.scaler.state_dict()
        extra = {"distgan_version": __version__, "world_size": accelerator.num_processes, "fsdp": self.config.fsdp}
        record = self._generator_record(step)
        path = save_checkpoint(self.run_dir, step, models, optimizers, record, record["weights"], extra)
        logger.info("saved checkpoint %s", path)
        prune_checkpoints(self.run_dir, self.config.keep_checkpoints, protected=self.resume_from)

    def _architecture_difference(self, path: Path) -> str:
        """Name the generator keys whose values differ between the checkpoint's record and this run's models."""
        try:
            saved = read_generator_record(path / GENERATOR_RECORD)["architecture"]
        except CheckpointError:
            return ""  # no readable record: the caller falls back to torch's message
        if not isinstance(saved.get("generator"), dict):
            return ""
        mine = {"model": self.architecture.get("model"), **self.architecture.get("generator", {})}
        theirs = {"model": saved.get("model"), **saved["generator"]}
        keys = [key for key in mine if key in theirs and mine[key] != theirs[key]]
        return "; ".join(f"{key} is {theirs[key]} in the checkpoint and {mine[key]} in this run" for key in keys)

    def _load(self, path: Path) -> int:
        models, optimizers, state = load_checkpoint(path)
        if self.G_ema is not None and "G_ema" not in models:
            raise CheckpointError(f"checkpoint {path} has no G_ema weights; resume with --no-ema")
        if bool(state.get("fsdp", False)) != self.config.fsdp:
            written, now = ("with", "without") if state.get("fsdp") else ("without", "with")
            raise CheckpointError(f"checkpoint {path} was written {written} FSDP, and this run trains {now} it; "
                                  "their optimizer states differ in layout. Resume with the launch config and "
                                  "--fsdp setting of the run that wrote it")
        try:
            if self.config.fsdp:
                load_model(self.G, models["G"])
                load_model(self.D, models["D"])
                if self.G_ema is not None:
                    load_model(self.G_ema.module, models["G_ema"])
                    self.G_ema.mark_loaded()
                load_optimizer(self.G, self.opt_G, optimizers["optimizer_G"])
                load_optimizer(self.D, self.opt_D, optimizers["optimizer_D"])
            else:
                self.G_inner.load_state_dict(models["G"])
                self.D_inner.load_state_dict(models["D"])
                if self.G_ema is not None:
                    self.G_ema.load_state_dict(models["G_ema"])
                self.opt_G.load_state_dict(optimizers["optimizer_G"])
                self.opt_D.load_state_dict(optimizers["optimizer_D"])
            if self.accelerator.scaler is not None and "scaler" in optimizers:
                self.accelerator.scaler.load_state_dict(optimizers["scaler"])
        # load_state_dict raises RuntimeError for other shapes or names and ValueError or KeyError for
        # optimizer state of other parameter groups.
        except (RuntimeError, ValueError, KeyError) as error:
            reason = self._architecture_difference(path) or _first_details(error)
            raise CheckpointError(f"checkpoint {path} does not fit the models of this run ({reason}). It belongs "
                                  "to another architecture: make the run's config.toml describe it (model, "
                                  "width, depth, z_dim), or start a new run with another --out") from None
        logger.info("resumed from %s at step %d", path, state["step"])
        return int(state["step"])


def _first_details(error: Exception, limit: int = 3) -> str:
    """Return the first `limit` lines of a load_state_dict error after its heading, joined into one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return "; ".join(lines[:limit]) or type(error).__name__
