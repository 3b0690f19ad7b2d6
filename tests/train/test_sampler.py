"""The sampler computes only the indices a rank reads: per-step state, never an epoch's permutation."""

import time

import pytest

from mimo_runtime.plan import ModulePlan
from mimo_runtime.train.sampler import Sampler, permuted


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 17, 100, 1023, 1024, 1025, 4097])
def test_each_epoch_is_a_permutation_of_the_dataset(n):
    for key in range(3):
        assert sorted(permuted(i, n, key) for i in range(n)) == list(range(n))


def test_a_large_dataset_is_a_permutation_too():
    n = 50_000
    assert len({permuted(i, n, 7) for i in range(n)}) == n


def test_epochs_and_seeds_give_different_orders():
    s = Sampler(1000, 100, 10, seed=0)
    first, second = s.step_samples(0), s.step_samples(10)  # epoch 0 and epoch 1, same positions
    assert first != second and sorted(s.step_samples(0) + s.step_samples(1)) != list(range(200))
    assert Sampler(1000, 100, 10, seed=1).step_samples(0) != first


def test_every_epoch_visits_each_sample_once():
    s = Sampler(60, 12, 4, seed=3)
    for epoch in range(2):
        seen = [i for step in range(5 * epoch, 5 * epoch + 5) for i in s.step_samples(step)]
        assert sorted(seen) == list(range(60))


def test_unshuffled_is_the_dataset_order():
    s = Sampler(10, 4, 2, seed=0, shuffle=False)
    assert s.step_samples(0) == [0, 1, 2, 3] and s.step_samples(2) == [8, 9, 0, 1]


def test_replicas_split_each_microbatch_and_cover_the_step():
    s = Sampler(97, 24, 8, seed=5)
    enc = ModulePlan("images", "encoder", 0, 4, 1, 1, 4, 1)
    lang = ModulePlan("language", "language", 4, 2, 1, 1, 2, 1)
    for step in range(6):
        for mb in range(3):
            whole = s.microbatch(step, mb)
            assert whole == s.step_samples(step)[mb * 8:(mb + 1) * 8]
            for module in (enc, lang):
                assert [i for d in range(module.dp) for i in s.replica(step, mb, module, d)] == whole


def test_a_trillion_samples_cost_nothing_up_front():
    """A materialized permutation of 10**12 indices could not even be allocated."""
    s = Sampler(10 ** 12, 512, 64, seed=0)
    t0 = time.perf_counter()
    got = s.replica(123_456, 3, ModulePlan("language", "language", 0, 8, 1, 1, 8, 1), 5)
    assert time.perf_counter() - t0 < 0.5
    assert len(set(got)) == 8 and all(0 <= i < 10 ** 12 for i in got)
