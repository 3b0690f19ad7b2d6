#!/usr/bin/env bash
# Train the custom-encoder example: examples/custom_encoder/train.sh [--torchrun] [mimo-run train flags...]
#   examples/custom_encoder/train.sh --steps 30 --metrics runs/custom.jsonl
#   examples/custom_encoder/train.sh --colocated --steps 30      # the same model on one process
#   examples/custom_encoder/train.sh --torchrun --steps 30       # ranks started by torchrun instead
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# the factories are imported by module name: this directory must be on every rank's path
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
if [ "${1:-}" = "--torchrun" ]; then
    shift
    exec "$here/../torchrun/train.sh" "$here/topology.yaml" "$@"
fi
# the repository's .venv (what `make install` creates) unless PYTHON names another interpreter
python=${PYTHON:-$(cd "$here/../.." && pwd)/.venv/bin/python}
[ -x "$python" ] || { echo "error: no interpreter at $python: run \`make install\` or set PYTHON" >&2; exit 2; }
exec "$python" -m mimo_runtime.launch train "$here/topology.yaml" "$@"
