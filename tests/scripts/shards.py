"""Evaluate a data set of 101 samples sharded over the ranks and gather the results on every rank."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from distgan.distributed import gather_shards, shard_range

out = Path(sys.argv[1])
accelerator = Accelerator(cpu=True)
indices = shard_range(101, accelerator.process_index, accelerator.num_processes)
local = torch.tensor(list(indices), dtype=torch.float32)[:, None] * torch.ones(1, 3)  # one row of 3 values per sample
gathered = gather_shards(local, accelerator)
(out / f"rank{accelerator.process_index}.json").write_text(json.dumps({
    "local": len(indices), "gathered": gathered[:, 0].int().tolist()}))
accelerator.end_training()
