"""Launchers: `mimo-run` (cli.py), local spawn, torchrun, Ray.

`mimo_runtime.launch(...)` is the Python API's launcher (mimo_runtime/api.py). Importing this
package makes `mimo_runtime.launch` name the package instead of that function, so the package is
callable and forwards to it: the call works whichever of the two the name holds.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from mimo_runtime.api import launch

        return launch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
