"""The driver's side of metrics: collect rank 0's per-step records, show progress, write the JSONL.

Records are keyed by step, so a restarted attempt overwrites the steps it repeats and the file
ends up holding exactly the trajectory that finished. A run started with --resume keeps the
steps its file already holds that it does not repeat (the local launchers append in that case).
"""

import json
import os
import sys
from typing import Dict, Iterable, List, Optional, TextIO

from mimo_runtime.train.metrics import format_line

PROGRESS_ENV = "MIMO_PROGRESS_FILE"  # set on each rank's actor: where rank 0 appends its per-step records


class MetricsSink:
    def __init__(self, path: Optional[str], steps: int, out: TextIO = sys.stderr, keep_existing: bool = False):
        self.path, self.steps, self.out = path, steps, out
        self.records: Dict[int, dict] = {}
        if path and keep_existing and os.path.exists(path):
            with open(path) as f:
                self.records = {r["step"]: r for r in map(json.loads, filter(str.strip, f))}

    def add_lines(self, lines: Iterable[str]) -> None:
        records = [json.loads(line) for line in lines if line.strip()]
        for record in records:
            self.records[record["step"]] = record
            self.out.write(format_line(record, self.steps) + "\n")
        if records:
            self.out.flush()
            self.write()

    def add_final(self, records: Iterable[dict]) -> None:
        """The finished rank 0's own list: fills any step the last poll missed."""
        records = list(records)
        self.add_lines(json.dumps(r) for r in records if self.records.get(r["step"]) != r)

    def trajectory(self) -> List[dict]:
        return [self.records[step] for step in sorted(self.records)]

    def write(self) -> None:
        if not self.path:
            return
        with open(self.path + ".tmp", "w") as f:
            for record in self.trajectory():
                f.write(json.dumps(record) + "\n")
        os.replace(self.path + ".tmp", self.path)
