"""data.balance's cost model: pure, checked on large generated batches without processes."""

import random

import pytest

from mimo_runtime.data.balance import BalancedOrder, balanced, chunk_loads, deal, load_report, max_over_mean


def skewed(n, rng):
    """(encoder rows, tokens) of n samples: most have no image, a few have many (LLaVA-like mixes)."""
    out = []
    for _ in range(n):
        images = rng.choice([0] * 6 + [1, 1, 2, 8])
        out.append((images * 16.0, float(rng.randint(20, 60) + images * 16)))
    return out


def test_two_heavy_samples_go_to_different_bins():
    assert sorted(map(sorted, deal([(8.0, 1.0), (8.0, 1.0), (0.0, 1.0), (0.0, 1.0)], 2))) == [[0, 2], [1, 3]]


@pytest.mark.parametrize("seed", range(20))
def test_balanced_order_is_a_permutation_of_the_step(seed):
    rng = random.Random(seed)
    m, chunks, per = rng.choice([1, 2, 4, 8]), rng.choice([1, 2, 4]), rng.choice([1, 2, 3])
    samples = rng.sample(range(10_000), m * chunks * per)
    costs = skewed(len(samples), rng)
    order = balanced(samples, costs, m, chunks)
    assert sorted(order) == sorted(samples)
    assert balanced(samples, costs, m, chunks) == order  # every rank derives the same order


@pytest.mark.parametrize("seed", range(20))
def test_skewed_image_counts_are_evened_over_replicas_and_microbatches(seed):
    rng = random.Random(100 + seed)
    m, chunks, per = 8, 4, 4  # 128 samples: 8 microbatches, 4 DP replicas of 4 samples
    samples = list(range(m * chunks * per))
    costs = skewed(len(samples), rng)
    cost = dict(zip(samples, costs)).__getitem__
    order = balanced(samples, costs, m, chunks)
    for dim in (0, 1):
        before = max_over_mean([c[dim] for c in chunk_loads(samples, cost, per)])
        after = max_over_mean([c[dim] for c in chunk_loads(order, cost, per)])
        loads = [c[dim] for c in chunk_loads(samples, cost, per)]
        floor = max(c[dim] for c in costs) / (sum(loads) / len(loads))  # one sample alone in a chunk
        assert after <= before
        assert after <= 1.25 * max(floor, 1.0), (dim, before, after, floor)  # greedy: within 25% of the floor


def test_load_report_names_each_modules_before_and_after():
    rng = random.Random(3)
    samples = list(range(64))
    costs = skewed(64, rng)
    cost = dict(zip(samples, costs)).__getitem__
    hook = BalancedOrder(cost, 4, 4)
    report = load_report(samples, hook(samples), cost, {"images": (4, 0), "language": (4, 1)})
    assert set(report) == {"images", "language"}
    assert report["images"]["after"] < report["images"]["before"]


def test_bins_must_split_the_step_evenly():
    with pytest.raises(ValueError, match="do not split"):
        deal([(1.0,)] * 6, 4)


def test_bench_section_reports_max_over_mean_before_and_after_on_skewed_image_counts():
    from mimo_runtime.bench.balance import balance_load

    report = balance_load(global_batch=64, microbatches=4, encoder_dp=4, language_dp=2)
    for name in ("balance_images_max_over_mean", "balance_language_max_over_mean"):
        assert report[name]["after"] < report[name]["before"]
        assert report[name]["after"] >= 1.0


def test_step_time_bench_sides_differ_only_in_balance_and_packing_and_balancing_evens_its_loads(tmp_path):
    """The measured part of the bench (bench/balance.py balance_step_time) on its own data, without
    processes: its dataset indexes cleanly on the HF model, and its steps' loads even out."""
    import dataclasses

    from mimo_runtime.bench.balance import SIDES, step_loads, step_topologies, write_step_bench
    from mimo_runtime.data.llava import index_topology

    topologies = step_topologies(write_step_bench(str(tmp_path), samples=64))
    assert [(t.data.packing, t.data.balance) for t in topologies] == SIDES
    plain = topologies[0]
    for t in topologies[1:]:
        assert dataclasses.replace(t.data, packing=False, balance=False) == plain.data
        assert t.modules == plain.modules and t.model == plain.model
    index = index_topology(plain)["train"]
    assert {len(e.images) for e in index.entries} >= {0, 1, 4, 8}
    loads = step_loads(index, plain, 2)
    for name in ("images", "language"):
        assert 1.0 <= loads[name]["after"] < loads[name]["before"]
