"""Topology files: YAML -> validated, frozen `Topology`.

Validation reports every independent mistake at once (problems.py describes how a check records
one); `--set key.path=value` overrides are applied before it (overrides.py).
"""

from typing import Any, Dict, Sequence

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology.overrides import apply_overrides, blame_overrides, parse_override
from mimo_runtime.topology.parse import parse_topology, read_yaml
from mimo_runtime.topology.presets import PRESETS, EncoderDims, LanguageDims, PresetDims
from mimo_runtime.topology.problems import Problems, TopologyErrors
from mimo_runtime.topology.resolved import resolved_dict, resolved_yaml
from mimo_runtime.topology.schema import DataFactory, ModelFactory, Module, Parallel, Topology, Train
from mimo_runtime.topology.validate import finalize


def load_topology(path: str, overrides: Sequence[str] = ()) -> Topology:
    """Read, parse and validate a topology file, with `--set` overrides ("key.path=value") applied;
    raises `TopologyError` (`TopologyErrors` for several) naming file and field, or the flag."""
    return topology_from_dict(read_yaml(path), str(path), overrides)


def topology_from_dict(raw: Dict[str, Any], source: str = "<memory>", overrides: Sequence[str] = ()) -> Topology:
    parsed = [parse_override(text) for text in overrides]
    raw = apply_overrides(raw, parsed)
    try:
        return finalize(parse_topology(raw, source))
    except TopologyError as e:
        if not parsed:
            raise
        raise blame_overrides(e, [key for key, _ in parsed]) from None


__all__ = ["load_topology", "topology_from_dict", "resolved_dict", "resolved_yaml", "Topology", "Module", "Parallel",
           "Train", "ModelFactory", "DataFactory", "Problems", "TopologyErrors", "PRESETS", "PresetDims",
           "EncoderDims", "LanguageDims"]
