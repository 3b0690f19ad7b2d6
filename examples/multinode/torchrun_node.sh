#!/usr/bin/env bash
# One node of a multi-node torchrun job. Run it on every node with the same arguments, each with its
# own NODE_RANK (0 on the node whose address is MASTER_ADDR):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.11 NPROC_PER_NODE=2 examples/multinode/torchrun_node.sh \
#       topologies/vlm-4rank.yaml --steps 20 --metrics /shared/runs/vlm.jsonl
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.11 NPROC_PER_NODE=2 examples/multinode/torchrun_node.sh ...
# Static rendezvous: node k runs global ranks k*NPROC_PER_NODE .. (k+1)*NPROC_PER_NODE-1, so the plan's
# rank ranges decide which module lands on which node (`mimo-run plan TOPOLOGY` prints them).
# RDZV=c10d instead lets nodes join in any order (elastic rendezvous at MASTER_ADDR:MASTER_PORT); node
# ranks then follow the order of joining, so modules are not tied to particular machines. LOCAL_ADDR
# sets the address this node is reached at (torchrun looks up the host name otherwise).
set -euo pipefail
topology=${1:?usage: examples/multinode/torchrun_node.sh TOPOLOGY [mimo-run train flags...]}
shift
python=${PYTHON:-python}
: "${NNODES:?set NNODES}" "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}" "${NPROC_PER_NODE:?set NPROC_PER_NODE}"
port=${MASTER_PORT:-29500}
if [ "${RDZV:-static}" = c10d ]; then
    rdzv=(--rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$port" --rdzv-id "${RDZV_ID:-mimo}"
          ${LOCAL_ADDR:+--local-addr "$LOCAL_ADDR"})
else
    rdzv=(--node-rank "${NODE_RANK:?set NODE_RANK}" --master-addr "$MASTER_ADDR" --master-port "$port")
fi
exec "$python" -m torch.distributed.run --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" "${rdzv[@]}" \
    -m mimo_runtime.launch train "$topology" "$@"
