"""User factories named in topology files: `"package.module:function"`.

Pure Python (importlib only), so the topology can check the string form when it loads without
importing torch, and the runtime imports the user's code only when it builds a rank. Every
problem is a one-line `TopologyError` naming the topology field and the import path, because
the user fixes it in the file (or on PYTHONPATH), not in our code.
"""

import importlib
import re
import sys
from typing import Any, Callable, Optional

from mimo_runtime.errors import TopologyError

NEEDS_DATA = ("the model comes from a factory, so the data must too: add data: {factory: "
              "'package.module:function'} (or pass batches to Runtime.train_step)")
FORM = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def form_problem(text: str) -> Optional[str]:
    """Why `text` is not of the form 'package.module:function' (None when it is)."""
    if not isinstance(text, str) or not FORM.match(text):
        return f"expected 'package.module:function', got {text!r}"
    return None


def check_form(src: str, field: str, text: str) -> None:
    problem = form_problem(text)
    if problem:
        raise TopologyError(src, field, problem)


def resolve(src: str, field: str, text: str) -> Callable:
    """The function `text` names, imported now; one-line errors for each way it can fail."""
    check_form(src, field, text)
    module_name, _, attr = text.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # the module itself missing is a path problem; a missing import *inside* it is the user's code
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise TopologyError(src, field, f"cannot import '{module_name}' for {text} ({e}); is its directory "
                                            f"on PYTHONPATH? (sys.path[0] is {sys.path[0]!r})") from None
        raise TopologyError(src, field, f"importing '{module_name}' for {text} failed: "
                                        f"{type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing; name it in one line
        raise TopologyError(src, field, f"importing '{module_name}' for {text} failed: "
                                        f"{type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TopologyError(src, field, f"module '{module_name}' has no attribute '{attr}' (from {text})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TopologyError(src, field, f"{text} is a {type(obj).__name__}, not a function")
    return obj


def checked_result(src: str, field: str, text: str, value: Any, expected: type, what: str) -> Any:
    """`value` returned by factory `text`, or a one-line error when it is not an `expected`."""
    if not isinstance(value, expected):
        got = "None" if value is None else f"a {type(value).__module__}.{type(value).__name__}"
        raise TopologyError(src, field, f"{text} returned {got}; it must return {what}")
    return value


def preflight(topology, needs_data: bool = True) -> None:
    """Import a topology's factories now: the launcher calls it before starting ranks, so a bad
    path is one error here instead of one per rank. `needs_data`: the built-in loop reads the
    topology's data (a custom loop may pass its own batches)."""
    src = topology.source
    if not isinstance(topology.model, str) and topology.model.factory:  # not for model: {hf: DIR}
        resolve(src, "model.factory", topology.model.factory)
    if getattr(topology.data, "formats", None):
        from mimo_runtime.data.sources import index_data

        index_data(topology, heldout=True)  # bad records fail here, in seconds, before any rank starts
    elif topology.data is not None:
        resolve(src, "data.factory", topology.data.factory)
    elif needs_data and not isinstance(topology.model, str):
        raise TopologyError(src, "data", NEEDS_DATA)
