"""`mimo-run check TOPOLOGY [--memory-per-rank GB] [--samples N] [--set KEY=VALUE]`: a dry run, no ranks.

Everything `plan` checks, then what otherwise fails only after the ranks start: the model and data
factories import, every module builds (once, on the `meta` device: model/meta.py), each pretrained
file and each hf directory's tensor exists and its keys and shapes match the model, each freeze pattern matches a parameter, and
the first samples of the data parse. Independent problems are all reported (topology/problems.py).
On success it prints each module's parameters (trainable / frozen) and a per-rank memory estimate
(check_memory.py), checked against --memory-per-rank.
"""

import argparse

from mimo_runtime.launch.cli import add_overrides, positive_int


def add_arguments(p) -> None:
    p.add_argument("topology", help="topology YAML file")
    p.add_argument("--memory-per-rank", type=_gigabytes, metavar="GB",
                   help="fail when a rank's estimate exceeds this many GB (1 GB = 1e9 bytes)")
    p.add_argument("--samples", type=positive_int("--samples"), default=4, metavar="N",
                   help="data samples to parse (default 4)")
    add_overrides(p)


def _gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GB, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def run(args) -> int:
    from mimo_runtime.groups import one_rank_world

    with one_rank_world():  # build_on_meta's world ends with the command
        return _run(args)


def _run(args) -> int:
    from mimo_runtime.errors import ArgumentError
    from mimo_runtime.factories import preflight
    from mimo_runtime.launch.commands.check_memory import estimate, gb, mb, numel
    from mimo_runtime.launch.commands.params import module_params
    from mimo_runtime.model.meta import build_on_meta
    from mimo_runtime.plan import make_plan
    from mimo_runtime.topology import Problems, load_topology
    from mimo_runtime.train.freeze import parameter_census

    topology = load_topology(args.topology, args.overrides)
    plan = make_plan(topology)
    problems = Problems(topology.source)
    no_files = missing_files(topology, problems)
    before = len(problems.errors)
    if not missing_modules(topology, problems):
        with problems.guard():
            preflight(topology)
    if len(problems.errors) > before:
        stop(problems, args.overrides)  # nothing below can run without the factories
    model, colocated = build_on_meta(topology, topology.train.seed)
    census = parameter_census(model, colocated, 0)
    check_freeze(topology, census, problems)
    check_pretrained(model, colocated, census, problems, skip=no_files)
    check_hf(model, colocated, problems)
    check_data(topology, model, args.samples, problems)
    stop(problems, args.overrides)

    params = {name: module_params(model, name) for name in topology.modules}
    print(f"{topology.source}: plan, factories, model, pretrained weights, freeze patterns and data OK")
    print(f"{'module':<10} {'parameters':>12} {'trainable':>12} {'frozen':>12}")
    for name, entries in params.items():
        total = sum(numel(p.shape) for p in entries)
        trainable = sum(numel(p.shape) for p in entries if p.trainable)
        print(f"{name:<10} {total:>12,} {trainable:>12,} {total - trainable:>12,}")
    ranks = estimate(plan, params)
    print()
    print(f"memory per rank (estimate, MB):  {'params':>9} {'grads':>9} {'optim':>9} {'activ':>9} {'total':>9}")
    for r in ranks:
        act = f"{mb(r.activations):>9.3f}" if r.activations is not None else f"{'n/a':>9}"
        print(f"  rank {r.rank:<4} {r.what:<20} {mb(r.params):>9.3f} {mb(r.grads):>9.3f} {mb(r.optimizer):>9.3f} "
              f"{act} {mb(r.total):>9.3f}")
    if any(r.activations is None for r in ranks):
        print("  (activations are estimated for presets only; a factory model's total leaves them out)")
    if args.memory_per_rank is not None:
        worst = max(ranks, key=lambda r: r.total)
        if gb(worst.total) > args.memory_per_rank:
            raise ArgumentError("--memory-per-rank", f"rank {worst.rank} ({worst.what}) needs about "
                                                     f"{gb(worst.total):.3g} GB, more than {args.memory_per_rank:g} GB")
        print(f"every rank fits in {args.memory_per_rank:g} GB (largest: rank {worst.rank}, {gb(worst.total):.3g} GB)")
    return 0


def stop(problems, overrides) -> None:
    """`problems.stop()`, a problem with a key a `--set` gave reported as that flag's."""
    from mimo_runtime.errors import TopologyError
    from mimo_runtime.topology.overrides import blame_overrides, parse_override

    try:
        problems.stop()
    except TopologyError as e:
        raise blame_overrides(e, [parse_override(text)[0] for text in overrides]) from None


def missing_modules(topology, problems) -> bool:
    """Cheap enough for `plan`: each factory's module is on the path (found, not imported: importing
    runs the user's code). True when one is missing (the model cannot be built then)."""
    import importlib.util

    factories = [("data.factory", topology.data.factory)] if topology.data is not None else []
    if not isinstance(topology.model, str):
        factories.insert(0, ("model.factory", topology.model.factory))
    missing = False
    for field, text in factories:
        if not text:  # no factory: the model comes from `hf`, the data from a `format`
            continue
        module = text.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing or broken
            found = False
        if not found:
            problems.add(field, f"cannot find module '{module}' for {text}; is its directory on PYTHONPATH?")
            missing = True
    return missing


def missing_files(topology, problems) -> set:
    """Cheap enough for `plan`: each pretrained path exists here. The modules whose path does not."""
    import os

    missing = set()
    for name, m in topology.modules.items():
        spec = m.pretrained
        if spec is not None and not os.path.exists(spec.path):
            what = "file" if spec.format == "torch" else "directory"
            problems.add(f"modules.{name}.pretrained.path", f"no such {what}: {spec.path}")
            missing.add(name)
    return missing


def check_freeze(topology, census, problems) -> None:
    """Each freeze pattern must match at least one parameter of its module (a typo matches none)."""
    from mimo_runtime.train.params import matches, relative_name

    for name, m in topology.modules.items():
        for i, pattern in enumerate(m.freeze):
            if not any(matches(n, name, [pattern]) for n in census[name]):
                example = relative_name(next(iter(census[name]), ""), name)
                problems.add(f"modules.{name}.freeze[{i}]",
                             f"'{pattern}' matches no parameter of '{name}' (names look like '{example}')")


def check_pretrained(model, plan, census, problems, skip=()) -> None:
    """The files exist and their keys and shapes match the model (the load itself writes into `meta`)."""
    from mimo_runtime.train.checkpoint_check import read_dcp_metadata
    from mimo_runtime.train.pretrained import _load_module, _rename, read_state_dict
    from mimo_runtime.train.pretrained_checkpoint import _request, _step_dir

    src = plan.topology.source
    for name, m in plan.topology.modules.items():
        spec, where = m.pretrained, f"modules.{name}.pretrained"
        if spec is None or name in skip:
            continue
        with problems.guard():
            if spec.format == "torch":
                stored = _rename(read_state_dict(spec, src, where), spec, src, where)
                _load_module(model, name, stored, spec, census[name], src, where)
            else:
                _request(model, name, spec, read_dcp_metadata(_step_dir(spec, src, where)), src, where)


def check_hf(model, plan, problems) -> None:
    """model: {hf: DIR} / modules.NAME.hf: every tensor the model loads is in the directory with its
    shape (the config was read by the validator and the meta build); the tensors are not read."""
    from mimo_runtime.model.factory import HF_FACTORY, model_factory

    text, args, _ = model_factory(plan.topology)
    if text != HF_FACTORY:
        return
    from mimo_runtime.hf.factory import check_weights

    with problems.guard():  # a directory that cannot be opened at all
        problems.errors.extend(check_weights(model, args, plan))


def check_data(topology, model, samples: int, problems) -> None:
    """Open the training data as rank 0 would and parse its first samples, every field the feeder reads."""
    from mimo_runtime.data.factory import has_data, open_dataset
    from mimo_runtime.model.factory import seq_length

    if not has_data(topology):
        return  # preflight already said a factory model needs a data factory
    with problems.guard():
        data = open_dataset(topology, "train", topology.train.seed, 0, seq_length(model.mimo_config))
        for i in range(min(samples, len(data))):
            data.tokens(i)
            for name in topology.encoders:
                if data.num_items(i, name):
                    data.modality(i, name)
