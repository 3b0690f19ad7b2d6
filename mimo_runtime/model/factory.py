"""A topology's model, from its factory: presets and user code take the same path.

`model: tiny-vlm` is shorthand for `model: {factory: "mimo_runtime.model.factory:preset",
args: {name: tiny-vlm}}`. Every rank calls the factory as `factory(args, ctx)`; it returns a
`MimoModelConfig` describing the whole model (every module's spec, cheap to build: specs are
data), and `MimoModel` builds only the modules and stages this rank holds. The runtime then
applies the keyed initialization (model/init.py), so a parameter's initial value depends on the
seed and its name only, whatever the topology, for user models as for presets.
"""

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from mimo_runtime.errors import TopologyError
from mimo_runtime.factories import checked_result, resolve
from mimo_runtime.model.config import MimoModelConfig
from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, ModulePlan, ModuleStageInfo, Plan, RankRole
from mimo_runtime.topology.schema import Topology

PRESET_FACTORY = "mimo_runtime.model.factory:preset"
# HF directories (mimo_runtime/hf, right of model in the data flow: resolved by name, not imported)
HF_FACTORY = "mimo_runtime.hf.factory:hf_model"
HF_LOADER = "mimo_runtime.hf.factory:load_weights"


@dataclass(frozen=True)
class BuildContext:
    """What a model factory gets besides its args: where this rank sits and its groups.

    pgs: {module: megatron ProcessGroupCollection (tp, cp, dp, pp, ...)}, None for modules this
    rank does not hold (their specs are still needed, never built). grid_map: {module: HyperCommGrid}.
    """

    plan: Plan
    rank: int
    seed: int
    pgs: Mapping[str, Any]
    grid_map: Mapping[str, Any]
    backend: str = "auto"

    @property
    def topology(self) -> Topology:
        return self.plan.topology

    @property
    def role(self) -> RankRole:
        return self.plan.role(self.rank)

    def parallel(self, module: str) -> ModulePlan:
        """The module's tp, cp, dp, pp (and sequence_parallel, frozen) under this run's plan."""
        return self.plan.modules[module]

    def stage(self, module: str) -> ModuleStageInfo:
        """This rank's pipeline stage of `module` (first and last when the rank does not hold it)."""
        return self.role.modules.get(module, ModuleStageInfo(True, True))

    def recompute(self, module: str) -> str:
        return self.topology.modules[module].recompute


def model_factory(topology: Topology) -> Tuple[str, Dict[str, Any], str]:
    """(import path, args, topology field) of the topology's model factory."""
    if _hf_parts(topology):
        return HF_FACTORY, {"parts": _hf_parts(topology)}, "modules"
    if isinstance(topology.model, str):
        return PRESET_FACTORY, {"name": topology.model}, "model"
    if topology.model.hf:
        return HF_FACTORY, {"dir": topology.model.hf}, "model.hf"
    return topology.model.factory, dict(topology.model.args), "model.factory"


def _hf_parts(topology: Topology) -> Dict[str, str]:
    return {n: m.hf for n, m in topology.modules.items() if m.hf}


def preset(args: Mapping[str, Any], ctx: BuildContext) -> MimoModelConfig:
    """The shipped presets as a factory: args {name: tiny-vlm | tiny-avlm | tiny-lm}."""
    from mimo_runtime.model.presets import preset_config

    plan = ctx.plan
    lang = plan.language
    return preset_config(args["name"], {n: (m.tp, m.pp) for n, m in plan.modules.items()}, ctx.pgs, ctx.grid_map,
                         ctx.rank, ctx.backend, {n: ctx.recompute(n) for n in plan.modules}, lang.cp,
                         lang.sequence_parallel, getattr(lang, "vpp", 1),
                         {n: m.vpp for n, m in plan.encoders.items()})


def model_config(ctx: BuildContext) -> MimoModelConfig:
    """Call the topology's factory and check what it returned against the topology."""
    topo = ctx.topology
    text, args, field = model_factory(topo)
    config = checked_result(topo.source, field, text, resolve(topo.source, field, text)(args, ctx),
                            MimoModelConfig, "a mimo_runtime.model.MimoModelConfig")
    check_config(config, topo, field, text)
    if config.module_to_grid_map is None:
        config.module_to_grid_map = dict(ctx.grid_map)
    return config


def check_config(config: MimoModelConfig, topo: Topology, field: str, text: str) -> None:
    src = topo.source
    if config.language_model_spec is None or "config" not in (config.language_model_spec.params or {}):
        raise TopologyError(src, field, f"{text} returned a MimoModelConfig without a language_model_spec whose "
                                        f"params carry the language model's TransformerConfig ('config')")
    built, wanted = sorted(config.modality_submodules_spec), sorted(topo.encoders)
    if built != wanted:
        raise TopologyError(src, field, f"{text} built encoders {built} but the topology's encoder modules are "
                                        f"{wanted}; they must be the same")
    for name in wanted:
        if name not in config.tokens_per_item:
            raise TopologyError(src, field, f"{text} returned a MimoModelConfig without tokens_per_item['{name}'] "
                                            f"(the rows one '{name}' item adds to the language sequence)")


def tokens_per_item(config: MimoModelConfig) -> Dict[str, int]:
    return dict(config.tokens_per_item)


def seq_length(config: MimoModelConfig) -> Optional[int]:
    """The language model's sequence length when its spec names one (GPT's max_sequence_length)."""
    return (config.language_model_spec.params or {}).get("max_sequence_length")


def build_model(plan: Plan, groups: Mapping[str, Any], rank: int, seed: int, backend: str = "auto",
                initialize: bool = True, device=None):
    """The MimoModel `rank` holds under `plan`, from the topology's factory, initialized from
    (seed, parameter name) unless `initialize` is false (a meta-device build, model/meta.py),
    frozen encoders frozen; `groups` from mimo_runtime.groups.

    `device` (a torch.device): the model is built under it as the default device, so megatron's
    CPU-initialization path (`use_cpu_initialization`, which needs no CUDA RNG tracker) allocates
    there; whatever a layer places on CPU explicitly (TE's wrappers under that flag) moves after.
    The keyed values are drawn on CPU either way (model/init.py)."""
    from contextlib import nullcontext

    import torch

    from mimo_runtime.model.init import init_parameters
    from mimo_runtime.model.mimo import MimoModel
    from mimo_runtime.model.presets import _check_layer_split, freeze_encoder

    ctx = BuildContext(plan, rank, seed, {n: g.pgs for n, g in groups.items()},
                       {n: g.grid for n, g in groups.items()}, backend)
    with torch.device(device) if device is not None else nullcontext():
        model = MimoModel(model_config(ctx), rank=rank)
    _check_chunks(model, plan)
    if device is not None:
        model.to(device)
    _check_layer_split(model)
    if initialize:
        init_parameters(model, seed)
    text, args, field = model_factory(plan.topology)
    if text == HF_FACTORY:
        # after keyed init, so the loaded tensors are the ones that stay
        resolve(plan.topology.source, field, HF_LOADER)(model, args, ctx)
    for name, m in plan.modules.items():
        if m.frozen and name != LANG:
            freeze_encoder(model, name)
    return model


def _check_chunks(model, plan: Plan) -> None:
    """A factory's configs must ask megatron for the topology's chunks: the language model's and each
    staged encoder's TransformerConfig (virtual_pipeline_model_parallel_size)."""
    text, _, field = model_factory(plan.topology)
    for name, m in plan.modules.items():
        if name not in model.role.modules or m.pp == 1:
            continue
        built = model.num_chunks if name == LANG else len(model.encoder_chunks(name))
        if built == m.vpp:
            continue
        which = "a language" if name == LANG else f"the '{name}' encoder's"
        raise TopologyError(plan.topology.source, field,
                            f"{text} returned {which} TransformerConfig with virtual_pipeline_model_parallel_size="
                            f"{built if built > 1 else None}, but modules.{name}.parallel.vpp is "
                            f"{m.vpp}; set it to {m.vpp} (megatron's interleaving)")
