#!/usr/bin/env bash
# Start distgan training on this node of a multi-node job. Run it on every node.
#
#   NODE_RANK=0 MASTER_ADDR=10.0.0.1 NUM_NODES=2 GPUS_PER_NODE=8 launch/multi_node.sh --batch-size 1024
#
# NODE_RANK is 0 on the node at MASTER_ADDR, which must be reachable from all
# nodes on MASTER_PORT. Every argument is passed on to `distgan train`.
set -euo pipefail

: "${NODE_RANK:?set NODE_RANK to the index of this node, 0 on the node at MASTER_ADDR}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
NUM_NODES=${NUM_NODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_PORT=${MASTER_PORT:-29500}
MIXED_PRECISION=${MIXED_PRECISION:-bf16}

exec accelerate launch \
  --multi_gpu \
  --num_machines "$NUM_NODES" \
  --num_processes "$((NUM_NODES * GPUS_PER_NODE))" \
  --machine_rank "$NODE_RANK" \
  --main_process_ip "$MASTER_ADDR" \
  --main_process_port "$MASTER_PORT" \
  --mixed_precision "$MIXED_PRECISION" \
  --dynamo_backend no \
  -m distgan train "$@"
