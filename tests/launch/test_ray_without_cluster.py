"""Ray launcher pieces that need no cluster: placement groups from topology resources, what a cluster
cannot place, addresses, metrics across restarts, the config and environment of restarted ranks."""

import dataclasses
import io

import pytest

from mimo_runtime.errors import ArgumentError
from mimo_runtime.launch.ray.connect import check_reachable
from mimo_runtime.launch.ray.driver import actor_env
from mimo_runtime.launch.ray.metrics import MetricsSink
from mimo_runtime.launch.ray.netaddr import gloo_interface, is_loopback
from mimo_runtime.launch.ray.placement import actor_options, rank_bundle, rank_slots, unplaceable
from mimo_runtime.launch.ray.train_fn import actor_config
from mimo_runtime.plan import colocated_plan, make_plan
from mimo_runtime.topology import load_topology
from mimo_runtime.train.config import RunConfig

from tests.launch.conftest import HETERO

NODES = [{"CPU": 2.0, "enc": 1.0, "memory": 1e9}, {"CPU": 2.0, "llm": 2.0, "memory": 1e9}]


def test_one_group_per_module_with_one_bundle_per_rank():
    topology = load_topology(HETERO)
    groups, slots = rank_slots(make_plan(topology))
    assert groups == [("images",), ("language",)]
    assert [(s.rank, s.group, s.bundle) for s in slots] == [(0, 0, 0), (1, 1, 0), (2, 1, 1)]
    assert rank_bundle(topology, ("images",)) == {"CPU": 1.0, "enc": 1.0}
    assert rank_bundle(topology, ("language",)) == {"CPU": 1.0, "llm": 1.0}


def test_colocated_ranks_share_one_group_asking_for_every_module_resource():
    topology = load_topology(HETERO)
    groups, slots = rank_slots(colocated_plan(topology, 2))
    assert groups == [("images", "language")] and [s.bundle for s in slots] == [0, 1]
    assert rank_bundle(topology, groups[0]) == {"CPU": 1.0, "enc": 1.0, "llm": 1.0}


def test_actor_asks_for_exactly_its_bundle():
    assert actor_options({"CPU": 1.0, "GPU": 1.0, "accelerator_type:H100": 0.01, "llm": 1.0}) == {
        "num_cpus": 1.0, "num_gpus": 1.0, "resources": {"accelerator_type:H100": 0.01, "llm": 1.0}}


@pytest.mark.parametrize("bundle,count,reason", [
    ({"CPU": 1.0, "accelerator_type:H100": 1.0}, 1,
     "no node offers 'accelerator_type:H100' (the cluster offers CPU, enc, llm, memory)"),
    ({"enc": 1.0, "llm": 1.0}, 1, "no single node has all of these at once"),
    ({"CPU": 1.0, "llm": 1.0}, 3, "'llm': the cluster has 2 in all, these ranks need 3"),
    ({"CPU": 1.0, "llm": 1.0}, 2, "the resources exist but are in use"),
])
def test_unplaceable_names_what_is_missing(bundle, count, reason):
    message = unplaceable(bundle, count, 5.0, NODES)
    assert message.startswith(f"Ray could not place {count} rank(s) x {{")
    assert reason in message


@pytest.mark.parametrize("address,loopback", [
    ("127.0.0.1", True), ("127.0.0.1:6379", True), ("localhost:1", True), ("http://127.0.0.1:8265", True),
    ("[::1]:6379", True), ("10.0.0.5:6379", False), ("auto", False), ("ray://10.0.0.5:10001", False)])
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback


def test_gloo_uses_loopback_only_for_a_loopback_node():
    assert gloo_interface("127.0.0.1") == "lo"
    assert gloo_interface("203.0.113.77") is None  # not an address of this machine


def test_metrics_keep_the_trajectory_that_finished(tmp_path):
    path, progress = tmp_path / "m.jsonl", io.StringIO()
    sink = MetricsSink(str(path), 3, progress)
    rec = '{{"step": {}, "loss": {}, "grad_norm": 1.0, "step_time_s": 0.1}}'
    sink.add_lines([rec.format(1, 9.0)])  # attempt 1 dies after step 1
    sink.add_lines([rec.format(1, 4.0), rec.format(2, 3.0)])  # attempt 2 restarts from step 0
    finished = ((1, 4.0), (2, 3.0), (3, 2.0))
    sink.add_final([{"step": s, "loss": l, "grad_norm": 1.0, "step_time_s": 0.1} for s, l in finished])
    assert path.read_text().splitlines() == [rec.format(s, l) for s, l in finished]
    assert "step 3/3  loss 2.0000" in progress.getvalue()


def test_metrics_of_a_resumed_run_keep_the_earlier_steps_in_the_file(tmp_path):
    path = tmp_path / "m.jsonl"
    rec = '{{"step": {}, "loss": {}, "grad_norm": 1.0, "step_time_s": 0.1}}'
    path.write_text(rec.format(1, 5.0) + "\n" + rec.format(2, 4.0) + "\n")
    MetricsSink(str(path), 3, io.StringIO(), keep_existing=True).add_lines([rec.format(3, 3.0)])
    assert path.read_text().splitlines() == [rec.format(1, 5.0), rec.format(2, 4.0), rec.format(3, 3.0)]


def test_restarts_resume_from_the_checkpoint_directory_or_start_over():
    cfg = RunConfig(steps=3, seed=1, metrics_path="m.jsonl")
    first = actor_config(cfg, 0, io.StringIO())
    assert (first.metrics_path, first.progress, first.resume) == (None, False, False)
    assert actor_config(cfg, 1, io.StringIO()).resume is False  # no checkpoints: from step 0
    with_dir = dataclasses.replace(cfg, checkpoint_dir="ckpt")
    assert actor_config(with_dir, 1, io.StringIO()).resume is True


def test_an_injected_fault_stands_for_a_transient_crash_and_is_not_repeated_on_restart(monkeypatch):
    monkeypatch.setenv("MIMO_INJECT_FAULT", "2:1:exit")
    monkeypatch.setenv("MIMO_OTHER", "x")
    assert actor_env(0)["MIMO_INJECT_FAULT"] == "2:1:exit"
    assert "MIMO_INJECT_FAULT" not in actor_env(1) and actor_env(1)["MIMO_OTHER"] == "x"


def test_an_address_where_no_cluster_listens_fails_at_once_instead_of_retrying_forever():
    with pytest.raises(ArgumentError, match=r"^--address: no Ray cluster answers at 127\.0\.0\.1:9: "):
        check_reachable("127.0.0.1:9", timeout_s=5)
    check_reachable("auto")  # Ray resolves these itself
    check_reachable("ray://10.0.0.5:10001")
