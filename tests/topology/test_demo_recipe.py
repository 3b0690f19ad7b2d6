"""`make demo`'s recipe is topologies/demo.yaml: vlm-4rank's layout with the demo's training settings,
run as `mimo-run train topologies/demo.yaml --eval-every 50 ...`."""

from pathlib import Path

from mimo_runtime.launch import demo
from mimo_runtime.launch.cli import build_parser
from mimo_runtime.launch.commands.train import run_overrides
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import load_topology
from mimo_runtime.train.lr_schedule import learning_rates

ROOT = Path(__file__).resolve().parents[2]


def load(name, overrides=()):
    return load_topology(str(ROOT / "topologies" / name), overrides)


def test_demo_file_is_the_default_layout_with_the_demo_training_settings():
    recipe, layout = load("demo.yaml"), load("vlm-4rank.yaml")
    assert {n: (m.ranks, m.rank_offset, m.parallel) for n, m in recipe.modules.items()} == \
        {n: (m.ranks, m.rank_offset, m.parallel) for n, m in layout.modules.items()}
    assert recipe.edges == layout.edges
    t = recipe.train
    assert (t.steps, t.global_batch, t.micro_batch, t.lr, t.grad_clip) == (300, 64, 8, 2.0e-3, 1.0)
    images = recipe.modules["images"].optimizer
    assert (images.lr, images.lr_schedule, images.warmup_steps, images.min_lr) == (4.0e-3, "warmup_cosine", 30, 1.0e-4)
    assert make_plan(recipe).num_microbatches == 8


def test_the_demo_runs_the_file_through_the_train_command_as_a_user_would():
    args = build_parser().parse_args(demo.HETERO)
    assert (args.command, args.topology, args.eval_every, args.overrides) == ("train", demo.TOPOLOGY, 50, [])
    assert demo.TOPOLOGY == "topologies/demo.yaml"


def test_the_colocated_reference_takes_the_first_steps_of_the_same_lr_schedule():
    full = load("demo.yaml")
    args = build_parser().parse_args(demo.colocated_args(full.train.steps))
    assert args.colocated and args.steps == demo.COMPARE_STEPS
    short = load("demo.yaml", run_overrides(args))
    assert [learning_rates(short, s) for s in range(demo.COMPARE_STEPS)] == \
        [learning_rates(full, s) for s in range(demo.COMPARE_STEPS)]
