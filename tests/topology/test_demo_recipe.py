"""`make demo`'s recipe is topologies/demo.yaml: vlm-4rank's layout with the demo's training settings,
run as `mimo-run train topologies/demo.yaml --eval-every 50 ...` on the LLaVA-format dataset the demo
writes (data/demo_data.py)."""

import os
from pathlib import Path

import pytest

from mimo_runtime.data import demo_data
from mimo_runtime.launch import demo
from mimo_runtime.launch.cli import build_parser
from mimo_runtime.launch.commands.train import run_overrides
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import load_topology
from mimo_runtime.train.lr_schedule import learning_rates

ROOT = Path(__file__).resolve().parents[2]


DATA = {"path": "train.jsonl", "image_root": "images", "tokenizer": "tokenizer", "heldout.path": "heldout.jsonl"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("demo-data"))
    demo_data.prepare(d, sizes={"train": 4, "heldout": 4})
    return d


def load(name, overrides=(), data_dir=None):
    """The topology; demo.yaml's data paths pointed at `data_dir` (its own need `make demo` to have run)."""
    moved = [f"data.{k}={data_dir}/{v}" for k, v in DATA.items()] if data_dir else []
    return load_topology(str(ROOT / "topologies" / name), moved + list(overrides))


def test_demo_file_reads_the_dataset_the_demo_writes():
    import yaml

    with open(ROOT / "topologies" / "demo.yaml") as f:
        data = yaml.safe_load(f)["data"]
    assert data["format"] == "llava"
    at = lambda p: os.path.normpath(os.path.join("topologies", p))  # noqa: E731 - relative to the file
    got = {"path": at(data["path"]), "image_root": at(data["image_root"]), "tokenizer": at(data["tokenizer"]),
           "heldout.path": at(data["heldout"]["path"])}
    assert got == {k: f"{demo_data.DEFAULT_DIR}/{v}" for k, v in DATA.items()}


def test_demo_file_is_the_default_layout_with_the_demo_training_settings(data_dir):
    recipe, layout = load("demo.yaml", data_dir=data_dir), load("vlm-4rank.yaml")
    assert {n: (m.ranks, m.rank_offset, m.parallel) for n, m in recipe.modules.items()} == \
        {n: (m.ranks, m.rank_offset, m.parallel) for n, m in layout.modules.items()}
    assert recipe.edges == layout.edges
    t = recipe.train
    assert (t.steps, t.global_batch, t.micro_batch, t.lr, t.grad_clip) == (500, 64, 8, 2.0e-3, 1.0)
    images = recipe.modules["images"].optimizer
    assert (images.lr, images.lr_schedule, images.warmup_steps, images.min_lr) == (4.0e-3, "warmup_cosine", 30, 1.0e-4)
    assert make_plan(recipe).num_microbatches == 8


def test_the_demo_runs_the_file_through_the_train_command_as_a_user_would():
    args = build_parser().parse_args(demo.HETERO)
    assert (args.command, args.topology, args.eval_every, args.overrides) == ("train", demo.TOPOLOGY, 50, [])
    assert demo.TOPOLOGY == "topologies/demo.yaml"


def test_the_colocated_reference_takes_the_first_steps_of_the_same_lr_schedule(data_dir):
    full = load("demo.yaml", data_dir=data_dir)
    args = build_parser().parse_args(demo.colocated_args(full.train.steps))
    assert args.colocated and args.steps == demo.COMPARE_STEPS
    short = load("demo.yaml", run_overrides(args), data_dir)
    assert [learning_rates(short, s) for s in range(demo.COMPARE_STEPS)] == \
        [learning_rates(full, s) for s in range(demo.COMPARE_STEPS)]
