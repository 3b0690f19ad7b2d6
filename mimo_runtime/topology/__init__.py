"""Topology files: YAML -> validated, frozen `Topology`."""

from typing import Any, Dict

from mimo_runtime.topology.parse import parse_topology, read_yaml
from mimo_runtime.topology.presets import PRESETS, EncoderDims, LanguageDims, PresetDims
from mimo_runtime.topology.schema import DataFactory, ModelFactory, Module, Parallel, Topology, Train
from mimo_runtime.topology.validate import finalize


def load_topology(path: str) -> Topology:
    """Read, parse and validate a topology file; raises `TopologyError` naming file and field."""
    return finalize(parse_topology(read_yaml(path), str(path)))


def topology_from_dict(raw: Dict[str, Any], source: str = "<memory>") -> Topology:
    return finalize(parse_topology(raw, source))


__all__ = ["load_topology", "topology_from_dict", "Topology", "Module", "Parallel", "Train", "ModelFactory", "DataFactory",
           "PRESETS", "PresetDims", "EncoderDims", "LanguageDims"]
