"""`mimo-run plan --auto --world-size N --model PRESET [--memory-per-rank GB] [-o FILE]` (not a subcommand itself).

Searches the topology with the lowest simulated step time that fits memory (mimo_runtime/autoplan),
then the fastest schedule for it (1f1b, zero_bubble, interleaved_1f1b with vpp 2 or 4), prints it with
its predicted step time, bubble and gain over 1f1b next to the naive even split, and writes it as a
topology file.
"""

from mimo_runtime.errors import ArgumentError
from mimo_runtime.topology import PRESETS


def add_arguments(p) -> None:
    from mimo_runtime.launch.cli import positive_int

    g = p.add_argument_group("auto-planning (--auto)")
    g.add_argument("--auto", action="store_true", help="search the fastest topology for --model on --world-size ranks")
    g.add_argument("--model", help=f"preset to plan ({', '.join(sorted(PRESETS))})")
    g.add_argument("--memory-per-rank", type=float, default=80.0, metavar="GB", help="memory per rank in GiB (80)")
    g.add_argument("--global-batch", type=positive_int("--global-batch"), help="samples per step (8 x world size)")
    g.add_argument("--micro-batch", type=positive_int("--micro-batch"), default=2, help="samples per microbatch (2)")
    g.add_argument("--frozen", action="append", default=[], metavar="ENCODER", help="plan with this encoder frozen")
    g.add_argument("--profile", action="store_true", help="calibrate the compute rate with a quick matmul profile")
    g.add_argument("-o", "--output", metavar="FILE", help="write the topology here (default: print it)")


def run(args) -> int:
    from mimo_runtime.autoplan import Hardware, Problem, auto_plan, topology_yaml
    from mimo_runtime.autoplan.search import LANG

    if args.topology is not None:
        raise ArgumentError("--auto", f"plans from --model and --world-size; drop the topology {args.topology}")
    if args.world_size is None:
        raise ArgumentError("--world-size", "required with --auto")
    if args.model not in PRESETS:
        raise ArgumentError("--model", f"{args.model!r} is not a preset (known: {', '.join(sorted(PRESETS))})")
    if args.memory_per_rank <= 0:
        raise ArgumentError("--memory-per-rank", f"must be positive, got {args.memory_per_rank:g}")
    preset = PRESETS[args.model]
    unknown = [e for e in args.frozen if e not in preset.encoders]
    if unknown:
        raise ArgumentError("--frozen", f"{unknown[0]!r} is not an encoder of {args.model} "
                                        f"({', '.join(preset.encoders) or 'none'})")
    if args.world_size < len(preset.encoders) + 1:
        raise ArgumentError("--world-size", f"{args.model} has {len(preset.encoders) + 1} modules; "
                                            f"each needs a rank, got {args.world_size}")
    hw = Hardware()
    if args.profile:
        from mimo_runtime.bench.calibrate import calibrated

        hw = calibrated(hw)
    problem = Problem(preset, args.world_size, args.global_batch or 8 * args.world_size, args.micro_batch,
                      args.memory_per_rank, hw, frozenset(args.frozen))
    result = auto_plan(problem)
    if result.best is None:
        raise ArgumentError("--memory-per-rank", f"no plan of {args.model} on {args.world_size} ranks fits "
                                                 f"{args.memory_per_rank:g} GiB per rank")
    best, naive = result.best, result.naive
    text = topology_yaml(problem, best, naive)
    shapes = ", ".join(f"{n}: tp{tp} cp{cp} dp{dp} pp{pp}" if n == LANG else f"{n}: tp{tp} dp{dp} pp{pp}"
                       for n, (tp, cp, dp, pp) in best.candidate)
    print(f"auto plan   step {best.step_s:.6g} s  bubble {best.bubble:.3f}  peak {best.peak_gib:.3g} GiB  "
          f"microbatches {best.microbatches}  ({shapes})")
    if naive is not None:
        verdict = (f"-> takes {naive.step_s / best.step_s:.2f}x the auto plan's step time" if naive.fits
                   else "-> does not fit memory")
        print(f"even split  step {naive.step_s:.6g} s  bubble {naive.bubble:.3f}  peak {naive.peak_gib:.3g} GiB  "
              f"{verdict}")
    else:
        print("even split  not a valid plan for these batch sizes")
    chunks = f" vpp {', '.join(f'{n}={v}' for n, v in best.vpp)}" if best.vpp else ""
    print(f"schedule    {best.schedule}{chunks}  predicted {best.gain:.3f}x the step rate of 1f1b on these shapes")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
