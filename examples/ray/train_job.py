"""A Ray job that trains one topology: `ray job submit --working-dir . -- python examples/ray/train_job.py ...`.

It runs on the cluster's head node as the job's driver: one actor per rank, in one placement group
per module (from the topology's `resources`). Progress and every rank's log lines (prefixed with
the rank and module) go to the job's log (`ray job logs JOB_ID`); the results go to --out.
"""

import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", required=True, help="topology YAML (relative to the job's working dir)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the topology's train.steps)")
    p.add_argument("--seed", type=int, help="seed (default: the topology's train.seed)")
    p.add_argument("--max-restarts", type=int, default=0, help="restart every rank up to K times on a failure")
    p.add_argument("--placement-timeout", type=float, default=60.0, help="seconds to wait for resources")
    p.add_argument("--checkpoint-dir", help="checkpoints here (storage every node sees); restarts resume from it")
    p.add_argument("--save-every", type=int, default=0, help="save every K steps (default: after the last step)")
    p.add_argument("--metrics", help="write one JSON line per step here (a path on the head node)")
    p.add_argument("--out", help="write placement, metrics and attempts as JSON here (a path on the head node)")
    args = p.parse_args()

    from mimo_runtime.errors import JobFailure, UserError
    from mimo_runtime.launch.ray import launch_ray
    from mimo_runtime.topology import load_topology
    from mimo_runtime.train.loop import RunConfig

    try:
        topology = load_topology(args.topology)
        t = topology.train
        cfg = RunConfig(steps=args.steps or t.steps, seed=t.seed if args.seed is None else args.seed,
                        nproc=topology.world_size, schedule=t.schedule, metrics_path=args.metrics,
                        timeout_s=t.timeout_s, checkpoint_dir=args.checkpoint_dir, save_every=args.save_every)
        # No address: inside `ray job submit`, RAY_ADDRESS names the cluster the job runs on.
        run = launch_ray(topology, cfg, max_restarts=args.max_restarts, placement_timeout_s=args.placement_timeout)
    except (UserError, JobFailure) as e:
        print(e.line(), file=sys.stderr)
        return e.exit_code
    summary = {"topology": args.topology, "attempts": run.attempts, "failures": run.failures,
               "placement": run.placement, "nodes": run.nodes, "metrics": run.metrics}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    final = summary["metrics"][-1]
    print(f"done: {len(summary['metrics'])} steps, final loss {final['loss']:.4f}, {run.attempts} attempt(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
