"""Your own training loop over mimo_runtime's Python API.

    python examples/python_api/train_loop.py --topology topologies/vlm-2rank.yaml --steps 20

`mimo_runtime.launch` starts one process per rank of the topology and runs `main` in each;
`mimo_runtime.Runtime` is this rank's share of the model with `train_step` / `eval_step`. The loop
feeds its own global batches (an iterator, the same batches on every rank: each rank reads only
the fields it uses), evaluates on the held-out split and stops early when the loss is low enough.
"""

import argparse
import itertools
import json

import mimo_runtime


def my_batches(seed: int, global_batch: int):
    """Your data pipeline: global batches of samples in MimoModel.forward's format. Here the
    shipped digits captions, turned into plain sample dicts."""
    from mimo_runtime.data import make_dataset

    data = make_dataset("tiny-vlm", "train", seed)
    for start in itertools.count(0, global_batch):
        ids = [i % len(data) for i in range(start, start + global_batch)]
        yield [{**data.tokens(i), "modality_inputs": {"images": data.modality(i, "images")}} for i in ids]


def main(topology: str, steps: int, eval_every: int, target_loss: float):
    rt = mimo_runtime.Runtime(topology)
    if rt.rank == 0:
        print(f"rank 0 holds {sorted(rt.role.modules)} of a {rt.world_size}-rank plan", flush=True)
    batches = my_batches(rt.cfg.seed, rt.plan.global_batch)
    losses = []
    for _ in range(steps):
        metrics = rt.train_step(batches)  # the same metrics on every rank
        losses.append(metrics["loss"])
        if rt.rank == 0:
            print(f"step {metrics['step']}  loss {metrics['loss']:.4f}  grad_norm {metrics['grad_norm']:.3f}",
                  flush=True)
        if eval_every and rt.step % eval_every == 0:
            held_out = rt.eval_step()["loss"]  # the topology's held-out split
            if rt.rank == 0:
                print(f"  held-out loss {held_out:.4f}", flush=True)
        if metrics["loss"] < target_loss:  # every rank sees the same loss, so all stop together
            break
    return losses


if __name__ == "__main__":  # the ranks re-import this file: start them only from the command line
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", default="topologies/vlm-2rank.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--target-loss", type=float, default=0.5)
    a = p.parse_args()
    per_rank = mimo_runtime.launch(a.topology, main, args=(a.topology, a.steps, a.eval_every, a.target_loss))
    print(json.dumps({"losses": per_rank[0]}))
