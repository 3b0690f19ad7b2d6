"""A model and a dataset defined outside the package, named in a topology file, train on a
heterogeneous topology exactly like the colocated single-process run; the data is placed:
encoder ranks never load token fields, language ranks never load images. One launch checks all.
"""

import collections
import os

import pytest

from tests.factories.user_runs import HETERO, reference, user_topology
from tests.train import equivalence


@pytest.fixture(scope="module")
def hetero_run(tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("data-access"))
    # one data-loading worker process per rank: loads happen in forked workers, and must not change a bit
    topo = user_topology(HETERO, log_dir=log_dir, workers=1)
    return topo, equivalence.run(topo), _loads(log_dir)


def _loads(log_dir):
    """{rank: {field: loads}} and {rank: (the rank's pid, pids that loaded fields)} from the access log."""
    fields, pids = {}, {}
    for name in os.listdir(log_dir):
        rank = int(name[len("rank"):-len(".log")])
        with open(os.path.join(log_dir, name)) as f:
            lines = [line.split() for line in f if line.strip()]
        fields[rank] = collections.Counter(field for _, field in lines if field != "open")
        pids[rank] = ({int(pid) for pid, field in lines if field == "open"},
                      {int(pid) for pid, field in lines if field != "open"})
    return fields, pids


def test_user_factories_on_heterogeneous_topology_equal_colocated(hetero_run):
    topo, results, _ = hetero_run
    ref = reference()
    assert len(ref.metrics) == equivalence.STEPS
    equivalence.assert_matches_reference(topo, results, ref)


def test_encoder_ranks_load_only_images_and_language_ranks_only_tokens(hetero_run):
    _, _, (fields, _) = hetero_run
    assert sorted(fields) == [0, 1, 2], f"every rank loads something: {fields}"
    assert set(fields[0]) == {"images"}, f"encoder rank 0 loaded {dict(fields[0])}"
    # 3 steps x 8 samples, each loaded once (the item counts for the bridge come from that load)
    assert fields[0]["images"] == equivalence.STEPS * 8
    for rank in (1, 2):
        assert set(fields[rank]) == {"input_ids", "labels", "loss_mask"}, f"language rank {rank}: {dict(fields[rank])}"


def test_data_worker_processes_do_the_loading(hetero_run):
    _, _, (_, pids) = hetero_run
    for rank, (own, loaders) in pids.items():
        assert len(own) == 1, f"rank {rank} opened its dataset once, in its own process: {own}"
        assert loaders and not loaders & own, f"rank {rank}: loads came from {loaders}, the rank is {own}"
