"""mimo-runtime: heterogeneous multimodal training on megatron-core."""

__version__ = "0.1.0"

# The Python API (mimo_runtime/api.py) loads on first use, so `import mimo_runtime` stays light.
_API = ("Runtime", "launch")


def __getattr__(name):
    if name in _API:
        from mimo_runtime import api

        return getattr(api, name)
    raise AttributeError(f"module 'mimo_runtime' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_API))
