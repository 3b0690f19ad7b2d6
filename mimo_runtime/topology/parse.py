"""YAML -> raw dict -> schema dataclasses, with one-line errors naming file and field."""

import collections.abc
import dataclasses
import difflib
import math
import re
import typing
from typing import Any, Dict

import yaml

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology.problems import Problems
from mimo_runtime.topology.schema import REQUIRED, Module, Topology


class _Loader(yaml.SafeLoader):
    """safe_load that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
    first_line: Dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` keys may be overridden on purpose
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, collections.abc.Hashable):
            continue  # construct_mapping reports unhashable keys itself
        if key in first_line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first given on line {first_line[key]})", key_node.start_mark)
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def yaml_loader() -> type:
    return _Loader


def read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise TopologyError(path, "", f"cannot read file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise TopologyError(path, "", "cannot read file: not UTF-8 text") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TopologyError(path, where, f"invalid YAML: {problem}") from None
    if raw is None:
        raise TopologyError(path, "", "the file is empty; a topology needs at least a 'modules:' section")
    if not isinstance(raw, dict):
        raise TopologyError(path, "", f"expected a mapping of keys at the top level, got {raw!r}")
    return raw


def _convert(value: Any, tp: Any, src: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value  # free-form YAML handed to user code as is (factory args)
    if origin is typing.Union and type(None) not in typing.get_args(tp):
        return _convert_either(value, typing.get_args(tp), src, path)
    if origin is typing.Union:
        # Optional[X]: None (YAML `null`, or the key left out) means "inherit"; see schema.Optimizer
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(value, args[0], src, path)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, src, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise TopologyError(src, path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TopologyError(src, path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TopologyError(src, path, f"expected a number, got {value!r}{_float_hint(value)}")
        if math.isnan(value):
            raise TopologyError(src, path, "expected a number, got .nan")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TopologyError(src, path, f"expected a string, got {value!r}")
        return value
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise TopologyError(src, path, f"expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, src, f"{path}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise TopologyError(src, path, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], src, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise TopologyError(src, path, f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, src, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    raise TypeError(f"schema type {tp} at {path} has no converter")


def _convert_either(value: Any, options: tuple, src: str, path: str) -> Any:
    """Union[str, Section] (e.g. `model:` a preset name or {factory, args}): the YAML type decides."""
    section = next(o for o in options if dataclasses.is_dataclass(o))
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return build(section, value, src, path)
    keys = ", ".join(f.name for f in dataclasses.fields(section))
    raise TopologyError(src, path, f"expected a name or a mapping with keys {keys}, got {value!r}")


def _float_hint(value: Any) -> str:
    """YAML 1.1 reads `3e-4` (no dot) as a string: say so, it is the usual cause."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+[eE][-+]?[0-9]+", value):
        fixed = re.sub(r"[eE]", ".0e", value, count=1)
        return f" (YAML reads {value} without a dot as text; write {fixed})"
    return ""


def build(cls: type, raw: Any, src: str, path: str, **given: Any) -> Any:
    """Fill dataclass `cls` from mapping `raw`: unknown keys, types and simple bounds checked,
    every bad key reported (problems.py), not only the first."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TopologyError(src, path, f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    problems = Problems(src)
    for key in raw:
        if key not in fields or key in given:
            near = difflib.get_close_matches(str(key), [k for k in fields if k not in given], n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            problems.add(f"{prefix}{key}", f"unknown key{hint}")
    values = dict(given)
    for name, f in fields.items():
        if name in given:
            continue
        if name not in raw:
            if f.default is REQUIRED:
                problems.add(f"{prefix}{name}", "required key is missing")
            continue
        with problems.guard():
            value = _convert(raw[name], hints[name], src, f"{prefix}{name}")
            _check_bounds(value, f, src, f"{prefix}{name}")
            values[name] = value
    problems.stop()
    return cls(**values)


def _check_bounds(value: Any, f: dataclasses.Field, src: str, path: str) -> None:
    meta = f.metadata
    if value is None:
        return  # an Optional key given as null: inherited, nothing to check
    if meta.get("choices") and value not in meta["choices"]:
        choices = ", ".join(meta["choices"])
        raise TopologyError(src, path, f"must be one of {choices}, got {value!r}")
    if meta.get("positive") and value <= 0:
        raise TopologyError(src, path, f"must be positive, got {value}")
    if meta.get("min_value") is not None and value < meta["min_value"]:
        raise TopologyError(src, path, f"must be >= {meta['min_value']}, got {value}")


def parse_modules(raw: Any, src: str) -> Dict[str, Module]:
    if not isinstance(raw, dict) or not raw:
        raise TopologyError(src, "modules", "expected a non-empty mapping of module name -> module")
    problems, modules = Problems(src), {}
    for name, section in raw.items():
        with problems.guard():
            modules[str(name)] = build(Module, section, src, f"modules.{name}", name=str(name))
    problems.stop()
    return modules


def parse_topology(raw: Dict[str, Any], src: str) -> Topology:
    """Schema pass only; `validate.finalize` fills defaults and checks cross-field rules."""
    problems, modules = Problems(src), {}
    if "modules" not in raw:
        problems.add("modules", "required key is missing")
    with problems.guard():
        modules = parse_modules(raw.get("modules"), src) if "modules" in raw else {}
    rest = {k: v for k, v in raw.items() if k != "modules"}
    given = {"modules": modules, "source": src}
    if isinstance(rest.get("data"), dict) and ("format" in rest["data"] or "blend" in rest["data"]):
        from mimo_runtime.topology.data import parse_data

        with problems.guard():
            given["data"] = parse_data(rest["data"], src)  # a dataset on disk, not a factory
        rest.pop("data")
    with problems.guard():
        topo = build(Topology, rest, src, "", **given)
    problems.stop()
    return topo
