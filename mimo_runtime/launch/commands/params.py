"""`mimo-run params TOPOLOGY [--module M] [--set KEY=VALUE]`: canonical parameter names and full shapes.

The names `freeze`, `no_weight_decay` and pretrained files use (train/params.py): global layer
indices, unsharded shapes, the same on every topology. Built on the `meta` device (model/meta.py),
so it costs no memory and starts no ranks.
"""

from typing import List

from mimo_runtime.launch.cli import add_overrides


def add_arguments(p) -> None:
    p.add_argument("topology", help="topology YAML file")
    p.add_argument("--module", metavar="M", help="only this module's parameters")
    add_overrides(p)


def module_params(model, name: str) -> List:
    """The module's parameters as check_memory.Param (canonical name, full shape, trainable, TP-split)."""
    from mimo_runtime.launch.commands.check_memory import Param
    from mimo_runtime.model.init import full_shape
    from mimo_runtime.train.params import named_module_parameters

    return [Param(n, tuple(full_shape(p, pdim, tp_size)), p.requires_grad, pdim is not None)
            for n, (p, pdim, _tp_rank, tp_size) in named_module_parameters(model, name).items()]


def run(args) -> int:
    from mimo_runtime.groups import one_rank_world

    with one_rank_world():  # build_on_meta's world ends with the command
        return _run(args)


def _run(args) -> int:
    import difflib

    from mimo_runtime.errors import ArgumentError
    from mimo_runtime.factories import preflight
    from mimo_runtime.model.meta import build_on_meta
    from mimo_runtime.topology import load_topology

    topology = load_topology(args.topology, args.overrides)
    if args.module is not None and args.module not in topology.modules:
        near = difflib.get_close_matches(args.module, list(topology.modules), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ArgumentError("--module", f"no module '{args.module}' in {topology.source} ({hint}modules: "
                                        f"{', '.join(topology.modules)})")
    preflight(topology, needs_data=False)
    model, _ = build_on_meta(topology)
    for name in [args.module] if args.module else list(topology.modules):
        for p in module_params(model, name):
            shape = "x".join(str(d) for d in p.shape) or "scalar"
            print(f"{p.name}  {shape}{'' if p.trainable else '  frozen'}")
    return 0
