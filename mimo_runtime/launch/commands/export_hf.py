"""`mimo-run export-hf TOPOLOGY [--checkpoint-dir DIR] -o OUT`: a topology's weights as an HF directory
(with modules.NAME.hf: one directory per part, OUT/NAME, and the projector beside them).

The model is built whole on this process (colocated, one rank) from the topology's `model: {hf: DIR}`,
then filled from the latest checkpoint in --checkpoint-dir (any topology's: checkpoints reshard),
or left at its initial weights without one, and written by mimo_runtime/hf/export.py.
"""

import os

from mimo_runtime.errors import ArgumentError, TopologyError
from mimo_runtime.topology import load_topology


def add_arguments(p) -> None:
    p.add_argument("topology", help="topology YAML file with model: {hf: DIR}")
    p.add_argument("--checkpoint-dir", help="export the latest checkpoint in DIR (default: the initial weights)")
    p.add_argument("-o", "--output", required=True, help="the HF directory to write")


def run(args) -> int:
    from mimo_runtime.groups import one_rank_world

    with one_rank_world():
        return _export(args)


def _export(args) -> int:
    topo = load_topology(args.topology)
    parts = {n: m.hf for n, m in topo.modules.items() if m.hf}
    if not parts and (isinstance(topo.model, str) or not topo.model.hf):
        raise TopologyError(topo.source, "model", "export-hf needs model: {hf: DIR} or modules.NAME.hf (the HF "
                                                  "directories give the config, key names and files it follows)")
    path = None
    if args.checkpoint_dir is not None:
        from mimo_runtime.train.checkpoint import latest_checkpoint

        path = latest_checkpoint(args.checkpoint_dir)
        if path is None:
            raise ArgumentError("--checkpoint-dir", f"no checkpoint in {args.checkpoint_dir}")
    model = _whole_model(topo)
    if path is not None:
        _load_model_tensors(model, path)
    from mimo_runtime.hf.export import export_dir, export_parts

    if parts:
        keys = export_parts(model, parts, topo.language.name, args.output)
    else:
        keys = export_dir(model, topo.model.hf, args.output)
    what = f"checkpoint {os.path.basename(path)}" if path else "initial weights"
    print(f"wrote {len(keys)} tensors ({what}) to {args.output}")
    return 0


def _whole_model(topo):
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model.factory import build_model
    from mimo_runtime.plan import colocated_plan

    plan = colocated_plan(topo, 1)
    return build_model(plan, build_module_groups(plan, topo.train.timeout_s), 0, topo.train.seed)


def _load_model_tensors(model, path: str) -> None:
    """The model's tensors only (no optimizer state) from a checkpoint of any topology."""
    import torch.distributed.checkpoint as dcp
    from megatron.core.dist_checkpointing.strategies.torch import MCoreLoadPlanner

    from mimo_runtime.train import checkpoint_state as cs
    from mimo_runtime.train.checkpoint_check import check_files, check_tensors, read_dcp_metadata

    tensors = cs.model_tensors(model)  # gated (SwiGLU) fc1 included: checkpoint_state.py splits its factory
    metadata = read_dcp_metadata(path)
    check_files(path, metadata)
    check_tensors(path, metadata, cs.global_shapes(tensors))
    dcp.load(cs.to_dcp(tensors, loading=True), storage_reader=dcp.FileSystemReader(path), planner=MCoreLoadPlanner())
