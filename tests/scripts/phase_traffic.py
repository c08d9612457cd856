"""Count gradient all-reduces and gradients per phase: D phase must not touch G, G phase must not touch D."""

import json
import sys
from pathlib import Path

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from common import small_config
from distgan.trainer import Trainer

out = Path(sys.argv[1])
config, data = small_config(out / "run")
trainer = Trainer(config, data)
start = trainer.setup()
accelerator = trainer.accelerator
counts = {"G": 0, "D": 0}


def counting(name):
    def hook(state, bucket):
        counts[name] += 1
        return allreduce_hook(state, bucket)
    return hook


trainer.G.register_comm_hook(None, counting("G"))
trainer.D.register_comm_hook(None, counting("D"))
runner = trainer.step_runner
log = []
for step in range(start, start + 3):
    batches = trainer.step_inputs(step)
    before = dict(counts)
    _, skip_D = runner.discriminator_phase(step, batches)
    after_D = dict(counts)
    G_grads_after_D = sum(p.grad is not None for p in trainer.G_inner.parameters())
    # Run the G phase without stepping its optimizer, so its gradients stay visible.
    optimizer_step = runner._optimizer_step
    runner._optimizer_step = lambda optimizer, skip: None
    runner.generator_phase(step, batches, skip_D)
    runner._optimizer_step = optimizer_step
    D_grads_after_G = sum(p.grad is not None for p in trainer.D_inner.parameters())
    G_grads_after_G = sum(p.grad is not None for p in trainer.G_inner.parameters())
    trainer.opt_G.step()
    trainer.opt_G.zero_grad(set_to_none=True)
    log.append({
        "D_allreduce_in_D_phase": after_D["D"] - before["D"],
        "G_allreduce_in_D_phase": after_D["G"] - before["G"],
        "D_allreduce_in_G_phase": counts["D"] - after_D["D"],
        "G_allreduce_in_G_phase": counts["G"] - after_D["G"],
        "G_grads_after_D_phase": G_grads_after_D,
        "D_grads_after_G_phase": D_grads_after_G,
        "G_grads_after_G_phase": G_grads_after_G,
        "G_parameters": sum(1 for _ in trainer.G_inner.parameters()),
    })
(out / f"rank{accelerator.process_index}.json").write_text(json.dumps(log))
trainer.close()
