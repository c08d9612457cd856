"""Tuning sweeps on the 2D mixtures: a plain PyTorch loop with distgan's models, loss, R1, EMA and decay.

The loop repeats what distgan's step does on the dense pair: the
non-saturating logistic loss, lazy R1 on real points, Adam, G_ema with the
warm-up of distgan.ema and linear learning-rate decay. It runs in one thread
and without Accelerate, so that two sweeps can share a 2-core machine. Its data and
latents come from one torch generator rather than from distgan's (seed,
step) schedule, so a run follows another path than `distgan train` with the
same seed; the figures agree in level (82.1 % against distgan's 80.4 %
high-quality samples after 20,000 steps of the earlier default on grid25).
It prints one JSON line per evaluation: modes covered, high-quality percent
and reverse KL of G_ema and of G on 10,000 samples. --depth sets the hidden
layers of both networks as distgan's --depth does; two options try what
distgan itself does not offer: --d-steps (D updates per G update) and
--top-k (G's loss on the fraction of the fakes that D rates highest, after
Sinha et al., 2020).

    python benchmarks/mixture_sweep.py --data grid25 --steps 40000 --decay-start 0.5
    python benchmarks/mixture_sweep.py --data ring8 --r1-gamma 1 --steps 20000
    python benchmarks/mixture_sweep.py --steps 20000 --d-steps 2 --save-points points.npy
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distgan.data.mixtures import MIXTURES, get_mixture
from distgan.ema import warmup_decay
from distgan.evaluation.mixtures import mixture_metrics
from distgan.lr_decay import decay_factor, set_learning_rate
from distgan.models import build_discriminator, build_generator, default_architecture


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=sorted(MIXTURES), default="grid25")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr-g", type=float, default=5e-4)
    parser.add_argument("--lr-d", type=float, default=5e-4)
    parser.add_argument("--decay-start", type=float, default=0.5, help="Fraction of the steps; 1 turns decay off.")
    parser.add_argument("--r1-gamma", type=float, default=0.1)
    parser.add_argument("--r1-every", type=int, default=16)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--z-dim", type=int, default=2)
    parser.add_argument("--depth", type=int, default=3,
                        help="Hidden layers of G and D (default: %(default)s, distgan's 2D default before it became 4).")
    parser.add_argument("--d-steps", type=int, default=1, help="D updates per G update (default: %(default)s).")
    parser.add_argument("--top-k", type=float, default=1.0,
                        help="Fraction of the fakes that G's loss uses, those with D's highest logits (default: %(default)s).")
    parser.add_argument("--beta1", type=float, default=0.5)
    parser.add_argument("--beta2", type=float, default=0.999)
    parser.add_argument("--save-points", help="Write G_ema's 10,000 evaluation points after the last step to this .npy file.")
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s).")
    return parser


def measure(generator: nn.Module, z: torch.Tensor, data: str) -> dict[str, float]:
    mixture = get_mixture(data)
    with torch.no_grad():
        points = generator(z).numpy()
    metrics = mixture_metrics(points, mixture.centers.numpy(), mixture.std)
    return {"modes": metrics.modes_covered, "high quality %": round(metrics.high_quality_percent, 2),
            "reverse KL": round(metrics.reverse_kl, 4)}


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mixture = get_mixture(args.data)
    record = default_architecture("dense", "points", [2], args.z_dim, args.width, depth=args.depth)
    G, D = build_generator(record), build_discriminator(record)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    opt_G = torch.optim.Adam(G.parameters(), args.lr_g, betas=(args.beta1, args.beta2))
    opt_D = torch.optim.Adam(D.parameters(), args.lr_d, betas=(args.beta1, args.beta2))
    generator = torch.Generator().manual_seed(args.seed)
    z_eval = torch.randn(10_000, args.z_dim, generator=torch.Generator().manual_seed(1))
    started = time.perf_counter()

    for step in range(args.steps):
        factor = decay_factor(step, args.steps, args.decay_start)
        set_learning_rate(opt_G, args.lr_g * factor)
        set_learning_rate(opt_D, args.lr_d * factor)

        for _ in range(args.d_steps):
            # D phase, with the lazy R1 penalty every r1_every steps at r1_every times the weight.
            real, _ = mixture.sample(args.batch_size, generator, torch.device("cpu"))
            with torch.no_grad():
                fake = G(torch.randn(args.batch_size, args.z_dim, generator=generator))
            r1_now = args.r1_gamma > 0 and step % args.r1_every == 0
            real.requires_grad_(r1_now)
            logits_real = D(real)
            loss_D = F.softplus(-logits_real).mean() + F.softplus(D(fake)).mean()
            if r1_now:
                (gradient,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
                loss_D = loss_D + args.r1_gamma / 2 * args.r1_every * gradient.pow(2).sum(1).mean()
            opt_D.zero_grad(set_to_none=True)
            loss_D.backward()
            opt_D.step()

        # G phase against the updated D, whose parameters get no gradients.
        D.requires_grad_(False)
        logits_fake = D(G(torch.randn(args.batch_size, args.z_dim, generator=generator)))
        if args.top_k < 1.0:
            logits_fake = logits_fake.topk(max(1, round(args.top_k * args.batch_size))).values
        loss_G = F.softplus(-logits_fake).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        D.requires_grad_(True)

        with torch.no_grad():
            rate = 1.0 - warmup_decay(args.ema_decay, step)
            for averaged, current in zip(G_ema.parameters(), G.parameters()):
                averaged.lerp_(current, rate)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            print(json.dumps({"step": step + 1, "G_ema": measure(G_ema, z_eval, args.data),
                              "G": measure(G, z_eval, args.data),
                              "seconds": round(time.perf_counter() - started)}), flush=True)
    if args.save_points:
        with torch.no_grad():
            np.save(args.save_points, G_ema(z_eval).numpy())


if __name__ == "__main__":
    main()
