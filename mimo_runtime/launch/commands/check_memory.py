"""Per-rank memory estimate of `mimo-run check`: parameters, gradients, optimizer state, activations.

Parameter counts are exact (the meta-device model's full shapes); a rank holds its TP shard of the
partitioned ones and the layers of its pipeline stage. Parameters outside the layers (embeddings,
output layer, projection) are counted on every stage of their module: an upper bound, they sit on
the first or last stage. Everything is fp32 (precision.py keeps fp32 master weights and gradients
under bf16): 4 bytes per weight, 4 per trainable gradient, 8 per trainable weight for AdamW's two
moments, 4 for SGD with momentum. Activations use the cost model of the auto-planner
(autoplan/costs.py, megatron's per-layer formula) for presets, times the microbatches a 1F1B stage
keeps in flight; a factory model's layer dimensions are not known here, so its activations are not
estimated.
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, ModuleLayout, Plan

_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Param:
    name: str
    shape: Tuple[int, ...]
    trainable: bool
    tp_partitioned: bool


@dataclass(frozen=True)
class RankMemory:
    rank: int
    what: str  # "images stage 0, ..."
    params: float  # bytes
    grads: float
    optimizer: float
    activations: Optional[float]  # None: not estimated

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + (self.activations or 0.0)


def numel(shape: Tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _stage_params(params: List[Param], tp: int, pp: int, stage: int) -> Tuple[float, float]:
    """(trainable, frozen) parameter counts on one rank of `stage`."""
    layers = sorted({int(m.group(1)) for p in params for m in [_LAYER.search(p.name)] if m})
    per_stage = max(1, len(layers) // pp)
    trainable = frozen = 0.0
    for p in params:
        m = _LAYER.search(p.name)
        if m and layers.index(int(m.group(1))) // per_stage != stage:
            continue
        n = numel(p.shape) / (tp if p.tp_partitioned else 1)
        if p.trainable:
            trainable += n
        else:
            frozen += n
    return trainable, frozen


def _optimizer_bytes_per_value(opt) -> int:
    if opt.name == "adamw":
        return 8
    return 4 if opt.momentum else 0


def _inflight(plan: Plan) -> Dict[Tuple[str, int], int]:
    from mimo_runtime.autoplan.costs import inflight_1f1b
    from mimo_runtime.schedule.graph import depth_to_sink, stage_graph

    m = plan.num_microbatches
    if plan.layout is ModuleLayout.COLOCATED:
        return {(n, 0): 1 for n in plan.modules}
    depth = depth_to_sink(stage_graph(plan))
    return {node: inflight_1f1b(d, m, True) for node, d in depth.items()}


def _activation_bytes(plan: Plan, name: str, stage: int, frozen: bool, frozen_all: bool,
                      inflight: int) -> Optional[float]:
    from mimo_runtime.autoplan.costs import Hardware, module_dims, stage_cost
    from mimo_runtime.topology import PRESETS
    from mimo_runtime.topology.hf import preset_of

    topo = plan.topology
    if preset_of(topo) is None:
        return None
    m, lang = plan.modules[name], plan.modules[LANG]
    samples = topo.train.micro_batch * lang.dp // m.dp
    bytes_per_value = 2 if topo.modules[name].precision == "bf16" else 4
    cost = stage_cost(module_dims(PRESETS[topo.model], name), (m.tp, m.cp, m.dp, m.pp), stage, samples,
                      Hardware(bytes_per_value=bytes_per_value), language=name == LANG, frozen=frozen,
                      frozen_all=frozen_all)
    return cost.act_bytes * inflight


def estimate(plan: Plan, params: Dict[str, List[Param]]) -> List[RankMemory]:
    """One entry per rank of `plan`, from every module's parameter list."""
    inflight = _inflight(plan)
    out = []
    for rank in range(plan.world_size):
        totals = [0.0, 0.0, 0.0, 0.0]
        unknown, parts = False, []
        for name in plan.modules_on(rank):
            m = plan.modules[name]
            stage = m.coords(rank).pp
            trainable, frozen = _stage_params(params[name], m.tp, m.pp, stage)
            opt = plan.topology.modules[name].optimizer
            node = (name, stage) if (name, stage) in inflight else (name, 0)
            act = _activation_bytes(plan, name, stage, m.frozen, trainable == 0, inflight[node])
            unknown = unknown or act is None
            for i, v in enumerate((4 * (trainable + frozen), 4 * trainable,
                                   _optimizer_bytes_per_value(opt) * trainable, act or 0.0)):
                totals[i] += v
            parts.append(f"{name} stage {stage}" if m.pp > 1 else name)
        out.append(RankMemory(rank, ", ".join(parts), *totals[:3], None if unknown else totals[3]))
    return out


def gb(nbytes: float) -> float:
    return nbytes / 1e9


def mb(nbytes: float) -> float:
    return nbytes / 1e6
