"""`--set key.path=value`: change one key of a topology file from the command line.

The value is YAML (`--set train.lr=1.0e-3`, `--set modules.images.freeze=['*.0.*']`,
`--set train.packing=true`); it replaces the key in the file's mapping before the schema pass, so
it is validated exactly like the file. A problem with a key a `--set` gave is reported as
`--set key.path: message`, every other one as the file's.
"""

import copy
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from mimo_runtime.errors import ArgumentError, TopologyError, UserError
from mimo_runtime.topology.parse import yaml_loader
from mimo_runtime.topology.problems import TopologyErrors, flatten

Override = Tuple[str, Any]


def parse_override(text: str) -> Override:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ArgumentError("--set", f"expected key.path=value, got {text!r}")
    if any(not part for part in key.split(".")):
        raise ArgumentError(f"--set {key}", "empty key in the path (write e.g. train.lr=1.0e-3)")
    try:
        return key, yaml.load(value, Loader=yaml_loader()) if value.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ArgumentError(f"--set {key}", f"invalid YAML value {value!r}: {problem}") from None


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[Override]) -> Dict[str, Any]:
    """A copy of the file's mapping with each override's key replaced (mappings on the way created)."""
    raw = copy.deepcopy(raw)
    for key, value in overrides:
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[:i + 1])
                raise ArgumentError(f"--set {key}", f"{where} is {child!r}, not a mapping; set it whole "
                                                    f"(--set {where}=...)")
            node = child
        node[parts[-1]] = value
    return raw


def blame_overrides(error: UserError, keys: Sequence[str]) -> UserError:
    """`error` with each problem under (or just above) a `--set` key reported as that flag's."""
    blamed: List[UserError] = [_blame(e, keys) for e in flatten(error)]
    return blamed[0] if len(blamed) == 1 else TopologyErrors(blamed)


def _blame(e: UserError, keys: Sequence[str]) -> UserError:
    if not isinstance(e, TopologyError) or not e.field:
        return e
    for key in keys:
        if _under(e.field, key):
            return ArgumentError(f"--set {e.field}", e.message)
    for key in keys:
        # a rule on the section that holds the key (`modules.x.parallel` for `...parallel.tp`)
        if "." in e.field and _under(key, e.field):
            return ArgumentError(f"--set {key}", e.message)
    return e


def _under(field: str, key: str) -> bool:
    return field == key or field.startswith(key + ".") or field.startswith(key + "[")
