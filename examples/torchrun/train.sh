#!/usr/bin/env bash
# Train a topology with torchrun on this machine: one process per rank of the topology.
#   examples/torchrun/train.sh topologies/vlm-4rank.yaml --steps 20 --metrics runs/metrics.jsonl
# Extra arguments go to `mimo-run train`. MASTER_PORT picks the rendezvous port (default 29500).
set -euo pipefail
topology=${1:?usage: examples/torchrun/train.sh TOPOLOGY [mimo-run train flags...]}
shift
# the repository's .venv (what `make install` creates) unless PYTHON names another interpreter
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || { echo "error: no interpreter at $python: run \`make install\` or set PYTHON" >&2; exit 2; }
# The world size comes from the plan, so --nproc-per-node always matches the topology.
nproc=$("$python" -m mimo_runtime.launch plan "$topology" --json |
        "$python" -c 'import json, sys; print(json.load(sys.stdin)["world_size"])')
exec "$python" -m torch.distributed.run --nproc-per-node "$nproc" \
    --master-addr 127.0.0.1 --master-port "${MASTER_PORT:-29500}" \
    -m mimo_runtime.launch train "$topology" "$@"
