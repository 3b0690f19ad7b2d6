"""Ray launcher: one placement group per module, one actor per rank (see docs/launching.md).

`ray` is imported only once a driver connects (see `connect.py` for why), so importing this
package is cheap and has no side effects.
"""

from mimo_runtime.launch.ray.driver import RayRun, launch_ray, run_job

__all__ = ["RayRun", "launch_ray", "run_job"]
