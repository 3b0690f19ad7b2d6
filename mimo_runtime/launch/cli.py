"""`mimo-run`: one subcommand per file in `launch/commands/`, imported only when used.

User errors (bad topology, bad flags) print one line `error: ...` and exit 2, never a traceback.
"""

import argparse
import importlib
import sys
from typing import List, Optional

from mimo_runtime.errors import ArgumentError, JobFailure, UserError

# subcommand -> (module under mimo_runtime.launch.commands, one-line help). Command modules keep
# their imports light at module level (torch is imported inside `run`) so `--help` stays fast.
COMMANDS = {
    "plan": ("plan", "show how a topology maps onto ranks (table or --json)"),
    "train": ("train", "train a topology (spawns its ranks, or is one rank under torchrun)"),
    "schedule": ("schedule", "print a topology's per-stage action lists and simulated bubble"),
    "check": ("check", "a dry run without ranks: plan's checks, factories, a meta-device build, pretrained files, "
                       "freeze patterns, data; parameters and per-rank memory"),
    "params": ("params", "list a topology's canonical parameter names and full shapes"),
    "bench": ("bench", "side-by-side benchmarks: vs torch pipelining, makespan, overhead, bridge bytes, scale"),
    "timeline": ("timeline", "draw the per-rank Gantt chart of a --trace file (PNG)"),
    "export-hf": ("export_hf", "write a topology's checkpoint (or initial weights) as an HF directory"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports `error: --flag: message` in one line with exit code 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse hook
        # argparse says "argument --flag: ..."; the contract is "error: --flag: message"
        if message.startswith("argument "):
            message = message[len("argument "):]
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from mimo_runtime import __version__

    parser = _Parser(prog="mimo-run", description="Heterogeneous multimodal training on megatron-core.")
    parser.add_argument("--version", action="version", version=f"mimo-run {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        _command(module).add_arguments(p)
    return parser


def _command(module: str):
    return importlib.import_module(f"mimo_runtime.launch.commands.{module}")


def add_overrides(p) -> None:
    """`--set key.path=value` (repeatable) for every command that reads a topology file."""
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                   help="override one key of the topology file (YAML value; repeatable), e.g. "
                        "--set train.lr=1.0e-3 --set modules.images.frozen=true")


def main(argv: Optional[List[str]] = None) -> int:
    quiet_library_warnings()
    args = build_parser().parse_args(argv)
    try:
        return int(_command(COMMANDS[args.command][0]).run(args) or 0)
    except BrokenPipeError:
        return _closed_pipe()
    except UserError as e:
        sys.stderr.write(e.line() + "\n")
        return e.exit_code
    except JobFailure as e:
        if e.detail:
            sys.stderr.write(e.detail.rstrip() + "\n")
        sys.stderr.write(e.line() + "\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


def _closed_pipe() -> int:
    """The reader went away (`mimo-run plan --json | head -1`): stop quietly, as `cat` does."""
    import os

    # Python flushes stdout again at exit and would report the same broken pipe there
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a process killed by the closed pipe


def quiet_library_warnings() -> None:
    """megatron warns about missing Apex/TE and experimental APIs on every import; users can't act on it."""
    import warnings

    for module in ("megatron", "torch.distributed"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    warnings.filterwarnings("ignore", category=UserWarning, message=".*experimental.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="megatron")


def positive_int(flag: str):
    """argparse `type=` for flags that must be > 0, reported in the one-line form."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return value

    parse.__name__ = flag
    return parse


__all__ = ["main", "build_parser", "positive_int", "add_overrides", "ArgumentError"]

if __name__ == "__main__":
    sys.exit(main())
