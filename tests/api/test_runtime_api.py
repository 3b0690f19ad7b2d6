"""`mimo_runtime.Runtime` in a user's own loop, started by `mimo_runtime.launch`: it trains what the
CLI trains (losses equal the colocated reference of the same user model and data), whether batches
come from the topology's data or from the caller, and each rank holds only its modules."""

import sys

import pytest

import mimo_runtime
from tests.api.loops import custom_loop
from tests.factories.user_runs import HETERO, reference, user_topology
from tests.train import equivalence


@pytest.fixture(scope="module")
def ranks():
    topo = user_topology(HETERO)
    return mimo_runtime.launch(topo, custom_loop, args=(topo, equivalence.SEED), timeout_s=400)


def test_import_mimo_runtime_stays_light():
    import subprocess

    code = "import sys, mimo_runtime; assert 'torch' not in sys.modules; assert callable(mimo_runtime.launch)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_rank_holds_only_its_modules(ranks):
    assert [r["rank"] for r in ranks] == [0, 1, 2] and {r["world_size"] for r in ranks} == {3}
    assert ranks[0]["role"] == ["images"] and ranks[0]["encoders_built"] == ["images"]
    assert not ranks[0]["language_built"]
    for r in ranks[1:]:
        assert r["role"] == ["language"] and r["language_built"] and r["encoders_built"] == []
    assert all(r["groups"] == ["images", "language"] for r in ranks)
    assert ranks[0]["optimizers"] == ["images"] and ranks[1]["optimizers"] == ["language"]


def test_custom_loop_losses_equal_the_colocated_reference(ranks):
    want = [m["loss"] for m in reference().metrics]
    for r in ranks:
        got = [m["loss"] for m in r["train"]]
        assert got == pytest.approx(want, rel=1e-4), (r["rank"], got, want)
        assert [m["step"] for m in r["train"]] == [1, 2, 3] and r["step"] == 3


def test_eval_steps_agree_on_every_rank(ranks):
    assert len({round(r["eval_list"], 6) for r in ranks}) == 1
    heldout = ranks[0]["eval_heldout"]
    assert all(r["eval_heldout"] == pytest.approx(heldout) for r in ranks)
    assert heldout[0] != heldout[1]  # consecutive held-out batches


def test_a_batch_of_the_wrong_size_is_refused_on_every_rank(ranks):
    for r in ranks:
        assert r["short_batch"].startswith("got a batch of 3 samples; train.global_batch of <acme> is 8")
