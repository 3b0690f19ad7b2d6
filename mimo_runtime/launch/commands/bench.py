"""`mimo-run bench [--json] [--quick] [--only SECTION ...] [-o FILE]`: side-by-side benchmarks (mimo_runtime/bench)."""

import json
import sys

SECTIONS = ("pipeline", "frozen", "bridge", "scale", "balance")


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object (the ratios, goals and details)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, not for reporting)")
    p.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                   help=f"run only these sections ({', '.join(SECTIONS)}); repeatable")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the JSON object here")


def run(args) -> int:
    from mimo_runtime.bench.run import run_all

    def log(line: str) -> None:
        sys.stderr.write(f"bench: {line}\n")
        sys.stderr.flush()

    result = run_all(quick=args.quick, sections=tuple(args.only or SECTIONS), log=log)
    text = json.dumps(result, indent=None if args.json else 1)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(text)
        return 0
    for key, goal in result["goals"].items():
        mark = {True: "met", False: "NOT met", None: "n/a"}[goal["met"]]
        print(f"{key:<34} {goal['value']!s:>12}   goal {goal['goal']:<8} {mark}")
    print(f"took {result['took_s']} s; load average {result['machine']['load_average_start']} -> "
          f"{result['machine']['load_average_end']} on {result['machine']['cpus']} cpus")
    return 0
