"""Cross-field rules: fill derived defaults, then check what a single field cannot."""

import dataclasses
import difflib
from typing import Dict, List, Tuple

from mimo_runtime.errors import TopologyError
from mimo_runtime.factories import check_form
from mimo_runtime.topology.hf import check_hf_model, check_hf_parts, layer_counts
from mimo_runtime.topology.data import check_data
from mimo_runtime.topology.presets import PRESETS
from mimo_runtime.topology.problems import Problems
from mimo_runtime.topology.schema import ModelFactory, Module, Parallel, Topology
from mimo_runtime.topology.training import resolve_training


def finalize(topo: Topology) -> Topology:
    """Derived defaults, then every check in `CHECKS`; all independent problems are reported together."""
    src, problems = topo.source, Problems(topo.source)
    _check_kinds(topo, problems)
    problems.stop()  # the rules below need exactly one language module
    modules = {}
    for n, m in topo.modules.items():
        with problems.guard():
            modules[n] = _fill_sizes(m, src)
    problems.stop()  # placement needs every module's rank count
    modules = _place(modules, topo.placement, src)
    edges = _edges(topo, modules)
    topo = dataclasses.replace(topo, modules=modules, edges=edges)
    with problems.guard():
        topo = check_data(topo)  # data: {format: ...} (topology/data.py); may set train.packing
    for check in CHECKS:
        check(topo, problems)
    with problems.guard():
        resolved = resolve_training(topo)
    problems.stop()
    return resolved


def _check_kinds(topo: Topology, problems: Problems) -> None:
    langs = [n for n, m in topo.modules.items() if m.kind == "language"]
    if not langs:
        problems.add("modules", "no module has kind: language (exactly one is required)")
    elif len(langs) > 1:
        problems.add(f"modules.{langs[1]}.kind", f"several language modules ({', '.join(langs)}); exactly one is allowed")
    elif langs[0] != "language":
        problems.add(f"modules.{langs[0]}",
                     f"the language module must be named 'language' (MIMO_LANGUAGE_MODULE_KEY), got '{langs[0]}'")
    for n, m in topo.modules.items():
        if m.kind == "encoder" and m.modality and m.modality != n:
            problems.add(f"modules.{n}.modality", f"an encoder module is named by its modality: rename '{n}' to '{m.modality}'")
        if m.kind == "language" and m.modality:
            problems.add(f"modules.{n}.modality", "only encoders have a modality")
        if m.kind == "language" and m.frozen:
            problems.add(f"modules.{n}.frozen", "only encoders can be frozen")
        if m.kind == "encoder" and m.sequence_parallel:
            problems.add(f"modules.{n}.sequence_parallel", "sequence parallelism is supported for the language model only")
        if m.kind == "encoder" and m.parallel.cp > 1:
            problems.add(f"modules.{n}.parallel.cp",
                         f"context parallelism is supported for the language model only, got cp={m.parallel.cp}")


def _fill_sizes(m: Module, src: str) -> Module:
    p, path = m.parallel, f"modules.{m.name}"
    fixed = p.tp * p.cp * p.pp
    dp, ranks = p.dp, m.ranks
    if ranks == 0:
        dp = dp or 1
        ranks = fixed * dp
    elif dp == 0:
        if ranks % fixed:
            raise TopologyError(src, f"{path}.parallel",
                                f"tp*cp*pp = {fixed} does not divide ranks={ranks}")
        dp = ranks // fixed
    elif fixed * dp != ranks:
        raise TopologyError(src, f"{path}.parallel",
                            f"tp*cp*dp*pp = {p.tp}*{p.cp}*{dp}*{p.pp} = {fixed * dp} != ranks={ranks}")
    for key, value in m.resources.items():
        if value < 0:
            raise TopologyError(src, f"{path}.resources.{key}", f"must be >= 0, got {value}")
    return dataclasses.replace(m, modality=m.modality if m.kind == "language" else (m.modality or m.name),
                               ranks=ranks, parallel=dataclasses.replace(p, dp=dp))


def _place(modules: Dict[str, Module], placement: str, src: str) -> Dict[str, Module]:
    if placement == "colocated":
        sizes = {m.ranks for m in modules.values()}
        for n, m in modules.items():
            if m.rank_offset not in (-1, 0):
                raise TopologyError(src, f"modules.{n}.rank_offset",
                                    "placement: colocated puts every module on all ranks; remove rank_offset")
            if len(modules) > 1 and m.parallel.pp > 1:
                raise TopologyError(src, f"modules.{n}.parallel.pp",
                                    "placement: colocated with several modules supports pp=1 only")
        if len(sizes) > 1:
            n = next(n for n, m in modules.items() if m.ranks != max(sizes))
            raise TopologyError(src, f"modules.{n}.ranks",
                                f"placement: colocated needs every module on the same ranks, got sizes {sorted(sizes)}")
        return {n: dataclasses.replace(m, rank_offset=0) for n, m in modules.items()}
    placed: Dict[str, Module] = {}
    next_free = 0
    for n, m in modules.items():
        offset = next_free if m.rank_offset == -1 else m.rank_offset
        placed[n] = dataclasses.replace(m, rank_offset=offset)
        next_free = offset + m.ranks
    spans = sorted((m.rank_offset, m.rank_offset + m.ranks, n) for n, m in placed.items())
    covered = 0
    for lo, hi, n in spans:
        if lo < covered:
            a, b, other = next(s for s in spans if s[2] != n and s[0] < hi and lo < s[1])
            raise TopologyError(src, f"modules.{n}.rank_offset",
                                f"{_span(lo, hi)} overlap module '{other}' ({_span(a, b)}); "
                                "use placement: colocated to share ranks")
        if lo > covered:
            raise TopologyError(src, f"modules.{n}.rank_offset",
                                f"starts at {lo}, leaving {_span(covered, lo)} with no module")
        covered = hi
    return placed


def _span(lo: int, hi: int) -> str:
    return f"rank {lo}" if hi - lo == 1 else f"ranks {lo}-{hi - 1}"


def _edges(topo: Topology, modules: Dict[str, Module]) -> Tuple[Tuple[str, str], ...]:
    src = topo.source
    lang = next(n for n, m in modules.items() if m.kind == "language")
    if not topo.edges:
        return tuple((n, lang) for n, m in modules.items() if m.kind == "encoder")
    seen = set()
    for i, (a, b) in enumerate(topo.edges):
        for j, name in enumerate((a, b)):
            if name not in modules:
                near = difflib.get_close_matches(name, list(modules), n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise TopologyError(src, f"edges[{i}][{j}]", f"unknown module '{name}'{hint}")
        if a == b:
            raise TopologyError(src, f"edges[{i}]", f"module '{a}' cannot feed itself")
        if a == lang:
            raise TopologyError(src, f"edges[{i}]", f"the language module '{lang}' must be the sink; it cannot feed '{b}'")
        if (a, b) in seen:
            raise TopologyError(src, f"edges[{i}]", f"duplicate edge {a} -> {b}")
        seen.add((a, b))
    _check_acyclic(topo.edges, src)
    for n, m in modules.items():
        if m.kind == "encoder" and not _reaches(n, lang, topo.edges):
            raise TopologyError(src, "edges", f"encoder '{n}' has no path to the language module '{lang}'")
    for i, (a, b) in enumerate(topo.edges):
        if b != lang:
            raise TopologyError(src, f"edges[{i}]",
                                f"encoder -> encoder edges ({a} -> {b}) are not supported; connect '{a}' to '{lang}'")
    return topo.edges


def _check_acyclic(edges, src: str) -> None:
    graph: Dict[str, List[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    state: Dict[str, int] = {}

    def visit(node: str, trail: List[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycle = " -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else f"{node} -> {nxt}"
                raise TopologyError(src, "edges", f"cycle {cycle}")
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [node])


def _reaches(a: str, b: str, edges) -> bool:
    frontier, seen = [a], {a}
    while frontier:
        node = frontier.pop()
        if node == b:
            return True
        for x, y in edges:
            if x == node and y not in seen:
                seen.add(y)
                frontier.append(y)
    return False


def _check_factories(topo: Topology, problems: Problems) -> None:
    src = topo.source
    if topo.data is not None:
        with problems.guard():
            check_form(src, "data.factory", topo.data.factory)
    if _hf_model(topo):
        with problems.guard():
            if any(m.hf for m in topo.modules.values()):
                check_hf_parts(topo)  # modules.NAME.hf (topology/hf.py)
            else:
                check_hf_model(topo)  # model: {hf: DIR} (topology/hf.py)
        return
    if isinstance(topo.model, ModelFactory):
        with problems.guard():
            check_form(src, "model.factory", topo.model.factory)


def _hf_model(topo: Topology) -> bool:
    return any(m.hf for m in topo.modules.values()) or (
        isinstance(topo.model, ModelFactory) and bool(topo.model.hf or not topo.model.factory))


def _check_model(topo: Topology, problems: Problems) -> None:
    if isinstance(topo.model, ModelFactory) or _hf_model(topo):
        return  # the user's model: its dimensions are unknown until the factory runs (`mimo-run check` builds it)
    with problems.guard():
        _check_preset(topo)


def _check_preset(topo: Topology) -> None:
    src = topo.source
    preset = PRESETS.get(topo.model)
    if preset is None:
        near = difflib.get_close_matches(topo.model, list(PRESETS), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(sorted(PRESETS))})"
        raise TopologyError(src, "model", f"unknown preset '{topo.model}'{hint}")
    known = ", ".join(preset.encoders) or "none"
    for n, m in topo.encoders.items():
        if m.modality not in preset.encoders:
            raise TopologyError(src, f"modules.{n}", f"preset '{preset.name}' has no '{m.modality}' encoder "
                                                     f"(its encoders: {known})")
    have = {m.modality for m in topo.encoders.values()}
    missing = [e for e in preset.encoders if e not in have]
    if missing:
        raise TopologyError(src, "modules", f"preset '{preset.name}' needs an encoder module '{missing[0]}' "
                                            f"(its encoders: {known})")
    for n, m in topo.modules.items():
        dims = preset.language if m.kind == "language" else preset.encoders[m.modality]
        _check_dims(src, f"modules.{n}.parallel", m.parallel, dims.heads, dims.layers, preset.name)
    if topo.language.parallel.tp > 1 and preset.language.vocab_size % topo.language.parallel.tp:
        raise TopologyError(src, f"modules.{topo.language.name}.parallel.tp",
                            f"{topo.language.parallel.tp} does not divide the vocabulary size {preset.language.vocab_size}")
    _check_sequence_split(topo, preset.language.seq_length)


def _check_sequence_split(topo: Topology, seq_length: int) -> None:
    # mirrors plan/sequence.py: 2*cp chunks per sequence (cp > 1), each cp part cut in tp with SP;
    # packed sequences are padded to fit instead
    src, lang = topo.source, topo.language
    cp, tp = lang.parallel.cp, lang.parallel.tp
    if lang.sequence_parallel and tp == 1:
        raise TopologyError(src, f"modules.{lang.name}.sequence_parallel",
                            "sequence parallelism needs parallel.tp > 1 (it splits the sequence over the TP ranks)")
    multiple = (2 * cp if cp > 1 else 1) * (tp if lang.sequence_parallel else 1)
    if seq_length % multiple and not topo.train.packing:
        what = "2*cp" if cp > 1 else ""
        what = " x ".join(x for x in (what, "tp (sequence_parallel)" if lang.sequence_parallel else "") if x)
        raise TopologyError(src, f"modules.{lang.name}.parallel.cp" if cp > 1 else
                            f"modules.{lang.name}.sequence_parallel",
                            f"{what} = {multiple} does not divide the sequence length {seq_length}")


def _check_dims(src: str, path: str, p: Parallel, heads: int, layers: int, preset: str) -> None:
    if heads % p.tp:
        raise TopologyError(src, f"{path}.tp", f"{p.tp} does not divide the {heads} attention heads of preset '{preset}'")
    if layers % p.pp:
        raise TopologyError(src, f"{path}.pp", f"{p.pp} does not divide the {layers} layers of preset '{preset}'")


def _check_batches(topo: Topology, problems: Problems) -> None:
    with problems.guard():
        _check_batch_sizes(topo)


def _check_batch_sizes(topo: Topology) -> None:
    src, t = topo.source, topo.train
    lang = topo.language
    ldp = lang.parallel.dp
    per_mb = t.micro_batch * ldp
    if t.micro_batch > t.global_batch:
        raise TopologyError(src, "train.micro_batch",
                            f"{t.micro_batch} is larger than train.global_batch={t.global_batch}")
    if t.global_batch % per_mb:
        raise TopologyError(src, "train.global_batch",
                            f"{t.global_batch} is not a multiple of micro_batch x language dp = {t.micro_batch} x {ldp} = {per_mb}")
    for a, b in topo.edges:
        ea, eb = topo.modules[a], topo.modules[b]
        da, db = ea.parallel.dp, eb.parallel.dp
        if da % db and db % da:
            raise TopologyError(src, f"modules.{a}.parallel.dp",
                                f"dp={da} and '{b}' dp={db} must divide one another")
        if per_mb % da:
            raise TopologyError(src, f"modules.{a}.parallel.dp",
                                f"{da} does not divide the {per_mb} samples of a microbatch (micro_batch x language dp)")


INTERLEAVING = ("interleaved_1f1b", "zero_bubble", "gpipe")  # schedules that run modules with vpp > 1


def _check_virtual_stages(topo: Topology, problems: Problems) -> None:
    """`parallel.vpp` and `train.schedule`: chunk c of stage p holds virtual stage c * pp + p (megatron's
    interleaving), so vpp * pp splits the layers, and megatron's microbatch rule for interleaving holds."""
    schedule = topo.train.schedule
    layers = _layers(topo)
    chunked = {n: m for n, m in topo.modules.items() if m.parallel.vpp > 1}
    for n, m in chunked.items():
        p, path = m.parallel, f"modules.{n}.parallel.vpp"
        if p.pp == 1:
            problems.add(path, f"vpp={p.vpp} needs pp > 1 (chunk c of stage p is virtual stage c * pp + p)")
        elif n in layers and layers[n] % p.pp == 0 and layers[n] % (p.pp * p.vpp):
            problems.add(path, f"vpp * pp = {p.vpp} * {p.pp} = {p.vpp * p.pp} does not divide the {layers[n]} "
                               f"layers of module '{n}'")
        if m.frozen:
            problems.add(path, "a frozen encoder runs vpp 1 (its trainable projection sits on its last stage)")
        if schedule not in INTERLEAVING:
            problems.add(path, f"vpp={p.vpp} needs train.schedule interleaved_1f1b, zero_bubble or gpipe "
                               f"(got {schedule})")
    if schedule == "interleaved_1f1b" and not chunked:
        problems.add("train.schedule", "interleaved_1f1b needs a module with parallel.vpp > 1")
    t, ldp = topo.train, topo.language.parallel.dp
    per_mb = t.micro_batch * ldp
    if t.global_batch % per_mb:
        return  # _check_batches reports it; the microbatch count is undefined
    m = t.global_batch // per_mb
    for n, mod in chunked.items():
        if mod.parallel.pp > 1 and m % mod.parallel.pp:
            problems.add("train.global_batch",
                         f"{m} microbatches per step (global_batch / (micro_batch x language dp)) is not a multiple "
                         f"of pp={mod.parallel.pp} of module '{n}' with vpp={mod.parallel.vpp} (megatron's "
                         "interleaving runs microbatches in groups of pp per virtual stage)")


def _layers(topo: Topology) -> Dict[str, int]:
    """Layers per module where the topology alone tells (presets, HF configs); {} for factories."""
    if _hf_model(topo):
        try:
            return layer_counts(topo)
        except TopologyError:
            return {}  # _check_factories reports the unreadable config
    if isinstance(topo.model, ModelFactory) or topo.model not in PRESETS:
        return {}
    preset = PRESETS[topo.model]
    return {n: (preset.language.layers if m.kind == "language" else preset.encoders[m.modality].layers)
            for n, m in topo.modules.items() if m.kind == "language" or m.modality in preset.encoders}


# Checks of a placed topology, each independent of the others: `check(topo, problems)` records what
# it finds (problems.py). A rule on a new section's keys is one function appended here.
CHECKS = (_check_factories, _check_model, _check_batches, _check_virtual_stages)
