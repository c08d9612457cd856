"""One training step: a discriminator phase, then a generator phase.

Both phases run over the step's micro-batches and step their optimizer once.
Gradients of the micro-batches before the last one stay local (DDP no_sync),
and each micro-batch loss is divided by their number, so N micro-batches of
B samples give the gradient of one batch of N * B samples. Accelerate's own
accumulation counter is not used: it advances once per `accumulate()` call,
and a step here has two phases on two models.

A phase whose gradients are not finite is skipped, and so is the G phase
after a skipped D phase. A step counts as skipped when either phase was; when
only its G phase was, the finite D update stays applied. Gradients are all-reduced before the check, so a NaN
on one rank makes every rank skip the same step without an extra collective.
With fused Adam the skip happens on the device (its `found_inf` input),
without a host synchronization.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from torch import nn

from distgan.augment import AugmentParams, DiffAugment
from distgan.ema import GeneratorEMA
from distgan.losses import AdversarialLoss
from distgan.penalties import interpolate, r1_penalty, wgan_gradient_penalty

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


def gradients_finite(module: nn.Module) -> torch.Tensor:
    """Return a 0-dim bool tensor on the device: whether every gradient of `module` is finite."""
    gradients = [p.grad for p in module.parameters() if p.grad is not None]
    if not gradients:
        return torch.ones((), dtype=torch.bool)
    norms = torch._foreach_norm(gradients)
    return torch.isfinite(torch.stack(norms).sum())


class AdversarialStep:
    """The D and G phases of a step on prepared (possibly DDP-wrapped) models and optimizers."""

    def __init__(self, accelerator: Accelerator, G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer,
                 opt_D: torch.optim.Optimizer, loss: AdversarialLoss, penalties: Penalties,
                 G_ema: GeneratorEMA | None = None, augment: DiffAugment | None = None,
                 conditional: bool = False) -> None:
        self.accelerator = accelerator
        self.G, self.D = G, D
        self.G_inner = accelerator.unwrap_model(G)
        self.D_inner = accelerator.unwrap_model(D)
        self.opt_G, self.opt_D = opt_G, opt_D
        self.loss = loss
        self.penalties = penalties
        self.G_ema = G_ema
        self.augment = augment
        self.conditional = conditional
        # With a GradScaler (fp16) the scaler finds overflowing gradients and skips the step itself.
        self.uses_scaler = accelerator.scaler is not None

    def _sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if last else self.accelerator.no_sync(model)

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
        inner = getattr(optimizer, "optimizer", optimizer)
        if self.uses_scaler:
            optimizer.step()
        elif inner.defaults.get("fused"):
            inner.found_inf = skip.float()
            try:
                optimizer.step()
            finally:
                del inner.found_inf
        elif not bool(skip):  # an optimizer without found_inf support needs the flag on the host
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _labels(self, batch: MicroBatch) -> torch.Tensor | None:
        return batch.labels if self.conditional else None

    def _augmented(self, images: torch.Tensor, params: AugmentParams | None) -> torch.Tensor:
        return images if self.augment is None or params is None else self.augment(images, params)

    def discriminator_phase(self, step: int, batches: list[MicroBatch]) -> tuple[torch.Tensor, torch.Tensor]:
        """Update D on real and fake samples; return (statistics [6], skip flag)."""
        count = len(batches)
        r1_now = self.penalties.r1_gamma > 0 and step % self.penalties.r1_every == 0
        gp_now = self.loss.gradient_penalty and self.penalties.gp_weight > 0
        stats = torch.zeros(6, device=batches[0].real.device)
        for index, batch in enumerate(batches):
            with self._sync(self.D, index == count - 1):
                labels = self._labels(batch)
                with torch.no_grad():
                    fake = run_model(self.G, batch.z_D, labels)
                # R1 differentiates with respect to the real images before augmentation.
                real = batch.real.detach().requires_grad_(r1_now)
                inputs = [self._augmented(real, batch.augment_real), self._augmented(fake, batch.augment_fake_D)]
                if gp_now:
                    inputs.append(interpolate(inputs[0].detach(), inputs[1], batch.mix).requires_grad_(True))
                all_labels = None if labels is None else labels.repeat(len(inputs))
                logits = run_model(self.D, torch.cat(inputs), all_labels).float().split(len(real))
                loss_D = self.loss.d_loss(logits[0], logits[1])
                total = loss_D
                r1 = gp = torch.zeros((), device=stats.device)
                if r1_now:
                    # Lazy regularization: every r1_every steps, with the weight scaled by r1_every.
                    r1 = r1_penalty(logits[0], real)
                    total = total + (self.penalties.r1_gamma / 2 * self.penalties.r1_every) * r1
                if gp_now:
                    gp = wgan_gradient_penalty(logits[2], inputs[2])
                    total = total + self.penalties.gp_weight * gp
                self.accelerator.backward(total / count)
            stats += torch.stack([loss_D, stats.new_zeros(()), logits[0].mean(), logits[1].mean(), r1, gp]).detach() / count
        skip = ~gradients_finite(self.D_inner)
        self._optimizer_step(self.opt_D, skip)
        return stats, skip

    def generator_phase(self, step: int, batches: list[MicroBatch], skip_D: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update G against the D of this step; return (mean G loss, skip flag). A skipped D phase skips G too."""
        count = len(batches)
        loss_sum = torch.zeros((), device=batches[0].real.device)
        if self.uses_scaler and bool(skip_D):
            return loss_sum, skip_D
        with frozen(self.D_inner):
            for index, batch in enumerate(batches):
                with self._sync(self.G, index == count - 1):
                    labels = self._labels(batch)
                    fake = self._augmented(run_model(self.G, batch.z_G, labels), batch.augment_fake_G)
                    loss_G = self.loss.g_loss(run_model(self.D_inner, fake, labels).float())
                    self.accelerator.backward(loss_G / count)
                loss_sum += loss_G.detach() / count
        skip = skip_D | ~gradients_finite(self.G_inner)
        self._optimizer_step(self.opt_G, skip)
        return loss_sum, skip

    # NOTE: fp16 runs only on GPUs under Accelerate, so the CPU test suite never enters the retry loop.
    def _retry_on_overflow(self, optimizer: torch.optim.Optimizer, phase: Callable[[], tuple[torch.Tensor, torch.Tensor]]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run a phase; with a GradScaler, repeat it at the lowered scale while its optimizer step was skipped.

        An overflow is not progress: the phase runs again on the same inputs, up
        to MAX_OVERFLOW_RETRIES times, after which the step counts as skipped.
        """
        if not self.uses_scaler:
            return phase()
        for _ in range(MAX_OVERFLOW_RETRIES):
            stats, skip = phase()
            if not optimizer.step_was_skipped and not bool(skip):
                return stats, skip
        return stats, torch.ones((), dtype=torch.bool, device=stats.device)

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
        good, good_D = (~skip).float(), (~skip_D).float()
        r1_step = float(self.penalties.r1_gamma > 0 and step % self.penalties.r1_every == 0)
        # torch.where instead of a product, so that NaN statistics of a skipped phase do not leak into the sums.
        sums = torch.where(skip_D, torch.zeros_like(stats_D), stats_D)
        sums[1] = torch.where(skip, torch.zeros_like(loss_G), loss_G)
        return torch.cat([sums, torch.stack([good, good_D * r1_step, 1.0 - good, good_D])])
