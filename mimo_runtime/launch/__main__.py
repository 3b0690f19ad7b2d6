"""`python -m mimo_runtime.launch ...` (what torchrun runs) is `mimo-run ...`."""

import sys

from mimo_runtime.launch.cli import main

if __name__ == "__main__":
    sys.exit(main())
