"""One training step: a discriminator phase, then a generator phase.

Both phases run over the step's micro-batches and step their optimizer once.
Gradients of the micro-batches before the last one stay local (DDP no_sync),
and each micro-batch loss is divided by their number, so N micro-batches of
B samples give the gradient of one batch of N * B samples. Accelerate's own
accumulation counter is not used: it advances once per `accumulate()` call,
and a step here has two phases on two models.

A phase whose loss (penalties included) is NaN or Inf on any rank is skipped
on every rank: the flag of each rank is all-reduced with MAX, one scalar per
phase, and a skipped D phase skips the G phase too. A step counts as skipped
when either phase was; when only its G phase was, the finite D update stays
applied. With fused Adam the skip happens on the device (its `found_inf`
input), without a host synchronization.

The check reads the loss, not the gradients, because a scan of every
gradient costs one extra pass over memory per phase (4 % of a step of the
dense pair on one CPU thread). A gradient can be non-finite while its loss
is finite only through an overflow inside the backward pass. fp16 runs have
the GradScaler's own gradient check for that. In other runs, weights that
turn non-finite stop the run at the next log line or checkpoint (see
Trainer), before they are saved.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from distgan.augment import AugmentParams, DiffAugment
from distgan.ema import GeneratorEMA
from distgan.losses import AdversarialLoss
from distgan.penalties import interpolate, r1_penalty, wgan_gradient_penalty
from distgan.sharding import is_sharded, reshard_all

# Positions in the statistics vector that a step returns. Loss/G is a sum over good steps, the D
# entries a sum over steps whose D phase was applied; SKIPPED and the *_COUNT entries are counts.
STAT_NAMES = ("Loss/D", "Loss/G", "Logits/real", "Logits/fake", "Loss/D/r1", "Loss/D/gp",
              "good_steps", "r1_steps", "Train/skipped_steps", "d_steps")
GOOD_COUNT, R1_COUNT, SKIPPED, D_COUNT = 6, 7, 8, 9
MAX_OVERFLOW_RETRIES = 16  # halvings of the fp16 loss scale within one phase before the step is skipped


@dataclass
class MicroBatch:
    """One rank's share of one micro-batch.

    `mix` contains the per-sample WGAN-GP interpolation weights. The augment_*
    fields contain the DiffAugment parameters of the real images, the fake
    images of the D phase and those of the G phase. In a conditional run,
    `labels` condition both the real and the generated samples.
    """

    real: torch.Tensor
    labels: torch.Tensor
    z_D: torch.Tensor
    z_G: torch.Tensor
    mix: torch.Tensor | None = None
    augment_real: AugmentParams | None = None
    augment_fake_D: AugmentParams | None = None
    augment_fake_G: AugmentParams | None = None


@dataclass
class Penalties:
    """Gradient penalty settings: R1 weight gamma every `r1_every` steps, WGAN-GP weight (0 turns either off)."""

    r1_gamma: float = 0.0
    r1_every: int = 1
    gp_weight: float = 0.0


def run_model(module: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Run G or D on `inputs`, passing `labels` only when they are not None.

    Unconditional modules are called without labels, so a custom pair need not accept them.
    """
    return module(inputs) if labels is None else module(inputs, labels)


@contextlib.contextmanager
def frozen(module: nn.Module | list[nn.Parameter]) -> Iterator[None]:
    """Turn off requires_grad for the parameters of `module` (or for a list of parameters) inside the block."""
    parameters = [p for p in (module if isinstance(module, list) else module.parameters()) if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


def nonfinite(values: list[torch.Tensor]) -> torch.Tensor:
    """Return a 0-dim float tensor on the device: 1.0 when any of the 0-dim `values` is NaN or Inf, else 0.0.

    The result has the form of fused Adam's `found_inf` input.
    """
    value = values[0] if len(values) == 1 else torch.stack(values)
    return torch.isfinite(value).all().logical_not().float()


def mean_over(values: list[torch.Tensor]) -> torch.Tensor:
    """Return the mean of a list of 0-dim tensors (the micro-batches of a step), with no op for one value."""
    return values[0] if len(values) == 1 else torch.stack(values).mean()


class AdversarialStep:
    """The D and G phases of a step on prepared (possibly DDP-wrapped) models and optimizers."""

    def __init__(self, accelerator: Accelerator, G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer,
                 opt_D: torch.optim.Optimizer, loss: AdversarialLoss, penalties: Penalties,
                 G_ema: GeneratorEMA | None = None, augment: DiffAugment | None = None,
                 conditional: bool = False, autocast: bool = False) -> None:
        """`autocast` runs the forward passes under Accelerate's mixed-precision autocast and returns float32.

        Models that Accelerate prepared have that in their forward already, so it is for sharded models.
        """
        self.accelerator = accelerator
        self.G, self.D = G, D
        self.G_inner = accelerator.unwrap_model(G)
        self.D_inner = accelerator.unwrap_model(D)
        # Parameter objects stay the same for the life of a run; listing them once saves a module walk per use.
        self.G_parameters = list(self.G_inner.parameters())
        self.D_parameters = list(self.D_inner.parameters())
        self.opt_G, self.opt_D = opt_G, opt_D
        self.loss = loss
        self.penalties = penalties
        self.G_ema = G_ema
        self.augment = augment
        self.conditional = conditional
        self.autocast = autocast and accelerator.mixed_precision != "no"
        self.D_sharded = is_sharded(self.D_inner)
        # With a GradScaler (fp16) the scaler finds overflowing gradients and skips the step itself.
        self.uses_scaler = accelerator.scaler is not None
        self._zeros: torch.Tensor | None = None
        self._columns: torch.Tensor | None = None
        # Without a scaler or XLA, Accelerate's backward and optimizer step reduce to the plain torch
        # calls, and calling those directly saves the wrappers' per-call checks (an importlib lookup
        # in each optimizer step of Accelerate 1.16).
        self.plain_calls = not self.uses_scaler and accelerator.distributed_type != DistributedType.XLA
        self.distributed = accelerator.num_processes > 1

    def _sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if last else self.accelerator.no_sync(model)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.plain_calls:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
        """Step `optimizer` unless `skip` (0-dim float, 1.0 = skip) is set, then clear its gradients."""
        inner = getattr(optimizer, "optimizer", optimizer)
        if self.uses_scaler:
            # The GradScaler checks the gradients for overflow itself; a non-finite loss skips before it.
            if not bool(skip):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return
        stepper = inner if self.plain_calls else optimizer
        if inner.defaults.get("fused"):
            inner.found_inf = skip
            try:
                stepper.step()
            finally:
                del inner.found_inf
        elif not bool(skip):  # an optimizer without found_inf support needs the flag on the host
            stepper.step()
        stepper.zero_grad(set_to_none=True)

    def _forward(self, module: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.autocast:
            return run_model(module, inputs, labels)
        with self.accelerator.autocast():
            return run_model(module, inputs, labels).float()

    def _labels(self, batch: MicroBatch) -> torch.Tensor | None:
        return batch.labels if self.conditional else None

    def _augmented(self, images: torch.Tensor, params: AugmentParams | None) -> torch.Tensor:
        return images if self.augment is None or params is None else self.augment(images, params)

    def discriminator_phase(self, step: int, batches: list[MicroBatch]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Update D on real and fake samples.

        Return the statistics [Loss/D, mean real logit, mean fake logit, R1, GP]
        as 0-dim tensors averaged over the micro-batches, and the skip flag
        (0-dim float, 1.0 when the loss was not finite on some rank).
        """
        count = len(batches)
        r1_now = self.penalties.r1_gamma > 0 and step % self.penalties.r1_every == 0
        gp_now = self.loss.gradient_penalty and self.penalties.gp_weight > 0
        zero = self._zero(batches[0].real.device)
        columns: list[list[torch.Tensor]] = [[], [], [], [], []]
        totals = []
        keep_gathered = self.D_sharded and (r1_now or gp_now)
        if keep_gathered:
            # A penalty's input gradient is a first backward pass through D, and FSDP would free D's gathered
            # weights after it, while the second (the loss's) still needs them.
            self.D_inner.set_reshard_after_backward(False)
        for index, batch in enumerate(batches):
            with self._sync(self.D, index == count - 1):
                labels = self._labels(batch)
                with torch.no_grad():
                    fake = self._forward(self.G, batch.z_D, labels)
                # R1 differentiates with respect to the real images before augmentation.
                real = batch.real.detach().requires_grad_(r1_now)
                inputs = [self._augmented(real, batch.augment_real), self._augmented(fake, batch.augment_fake_D)]
                if gp_now:
                    inputs.append(interpolate(inputs[0].detach(), inputs[1], batch.mix).requires_grad_(True))
                all_labels = None if labels is None else labels.repeat(len(inputs))
                logits = self._forward(self.D, torch.cat(inputs), all_labels).float().split(len(real))
                loss_D = self.loss.d_loss(logits[0], logits[1])
                total = loss_D
                r1 = gp = zero
                if r1_now:
                    # Lazy regularization: every r1_every steps, with the weight scaled by r1_every.
                    r1 = r1_penalty(logits[0], real)
                    total = total + (self.penalties.r1_gamma / 2 * self.penalties.r1_every) * r1
                if gp_now:
                    gp = wgan_gradient_penalty(logits[2], inputs[2])
                    total = total + self.penalties.gp_weight * gp
                self._backward(total if count == 1 else total / count)
                totals.append(total.detach())
            with torch.no_grad():
                for column, value in zip(columns, (loss_D, logits[0].mean(), logits[1].mean(), r1, gp)):
                    column.append(value.detach())
        if keep_gathered:
            self.D_inner.set_reshard_after_backward(True)
            reshard_all(self.D_inner)
        skip = self._any_rank(nonfinite(totals))
        self._optimizer_step(self.opt_D, skip)
        return [mean_over(column) for column in columns], skip

    def generator_phase(self, step: int, batches: list[MicroBatch], skip_D: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update G against the D of this step; return (mean G loss, skip flag). A skipped D phase skips G too."""
        count = len(batches)
        if self.uses_scaler and bool(skip_D):
            return self._zero(batches[0].real.device), skip_D
        losses = []
        with frozen(self.D_parameters):
            for index, batch in enumerate(batches):
                with self._sync(self.G, index == count - 1):
                    labels = self._labels(batch)
                    fake = self._augmented(self._forward(self.G, batch.z_G, labels), batch.augment_fake_G)
                    loss_G = self.loss.g_loss(self._forward(self.D_inner, fake, labels).float())
                    self._backward(loss_G if count == 1 else loss_G / count)
                losses.append(loss_G.detach())
        skip = torch.maximum(skip_D, self._any_rank(nonfinite(losses)))
        self._optimizer_step(self.opt_G, skip)
        return mean_over(losses), skip

    def _any_rank(self, flag: torch.Tensor) -> torch.Tensor:
        """Return `flag` (0.0 or 1.0) as the maximum over all ranks, so that every rank skips alike."""
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def _zero(self, device: torch.device) -> torch.Tensor:
        """Return a shared 0-dim zero on `device` for statistics that a step does not compute (never written to)."""
        if self._zeros is None or self._zeros.device != device:
            self._zeros = torch.zeros((), device=device)
        return self._zeros

    # NOTE: tests drive this loop on the CPU with a real GradScaler; fp16 autocast itself runs only on GPUs.
    def _retry_on_overflow(self, optimizer: torch.optim.Optimizer, phase: Callable[[], tuple[Any, torch.Tensor]]
                           ) -> tuple[Any, torch.Tensor]:
        """Run a phase; with a GradScaler, repeat it at the lowered scale while its optimizer step was skipped.

        An overflow is not progress: the phase runs again on the same inputs, up
        to MAX_OVERFLOW_RETRIES times, after which the step counts as skipped.
        """
        if not self.uses_scaler:
            return phase()
        for _ in range(MAX_OVERFLOW_RETRIES):
            stats, skip = phase()
            # A non-finite loss is not an overflow of the gradient scale: retrying would not change it.
            if bool(skip) or not optimizer.step_was_skipped:
                return stats, skip
        return stats, torch.ones_like(skip)

    def run(self, step: int, batches: list[MicroBatch]) -> torch.Tensor:
        """Run both phases and the EMA update; return the step's statistics (see STAT_NAMES) on the device.

        With fp16, an overflow in the D phase repeats the D phase before G runs.
        An overflow in the G phase repeats the G phase against the D that this
        step already updated, so the D update is kept.
        """
        stats_D, skip_D = self._retry_on_overflow(self.opt_D, lambda: self.discriminator_phase(step, batches))
        loss_G, skip = self._retry_on_overflow(self.opt_G, lambda: self.generator_phase(step, batches, skip_D))
        if self.G_ema is not None:
            self.G_ema.update(self.G_inner, step, skip)
        r1_step = float(self.penalties.r1_gamma > 0 and step % self.penalties.r1_every == 0)
        with torch.no_grad():
            values = torch.stack([stats_D[0], loss_G, *stats_D[1:]])
            flags = torch.stack([skip_D, skip])
            # A skipped phase contributes 0 to the sums: torch.where, so that its NaN statistics do not leak in.
            sums = torch.where(flags[self._flag_columns(values.device)] > 0, 0.0, values)
            good, good_D = 1.0 - skip, 1.0 - skip_D
            return torch.cat([sums, torch.stack([good, good_D * r1_step, skip, good_D])])

    def _flag_columns(self, device: torch.device) -> torch.Tensor:
        """Index into (skip_D, skip) for each statistics column: only Loss/G follows the G phase's flag."""
        if self._columns is None or self._columns.device != device:
            self._columns = torch.tensor([0, 1, 0, 0, 0, 0], device=device)
        return self._columns
