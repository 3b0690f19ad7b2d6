"""What the ranks' fork server imports once (launch/spawn.py), with megatron's import-time warnings off."""

from mimo_runtime.launch.cli import quiet_library_warnings

quiet_library_warnings()

import mimo_runtime.train.loop  # noqa: E402,F401  torch, megatron-core and the runtime
