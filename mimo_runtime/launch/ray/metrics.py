"""The driver's side of metrics: collect rank 0's per-step records, show progress, write the JSONL.

Records are keyed by step, so a restarted attempt overwrites the steps it repeats and the file
ends up holding exactly the trajectory that finished.
"""

import json
import sys
from typing import Dict, Iterable, Optional, TextIO

PROGRESS_ENV = "MIMO_PROGRESS_FILE"  # set on each rank's actor: where rank 0 appends its per-step records


class MetricsSink:
    def __init__(self, path: Optional[str], steps: int, out: TextIO = sys.stderr):
        self.path, self.steps, self.out = path, steps, out
        self.records: Dict[int, dict] = {}

    def add_lines(self, lines: Iterable[str]) -> None:
        records = [json.loads(line) for line in lines if line.strip()]
        for record in records:
            self.records[record["step"]] = record
            self.out.write(f"step {record['step']}/{self.steps}  loss {record['loss']:.4f}  "
                           f"grad_norm {record['grad_norm']:.3f}  {record['step_time_s']:.2f}s\n")
        if records:
            self.out.flush()
            self.write()

    def add_final(self, records: Iterable[dict]) -> None:
        """The finished rank 0's own list: fills any step the last poll missed."""
        fresh = [r for r in records if r["step"] not in self.records]
        self.add_lines(json.dumps(r) for r in fresh)
        for r in records:
            self.records[r["step"]] = r
        self.write()

    def write(self) -> None:
        if not self.path:
            return
        with open(self.path, "w") as f:
            for step in sorted(self.records):
                f.write(json.dumps(self.records[step]) + "\n")
