"""The one-rank world of in-process model work (groups/world.py): a command ends the world it
started, so a process that runs many (a notebook, these tests) does not pile up gloo threads; a
world that was there before is left alone."""

import gc
import os

import pytest
import torch.distributed as dist

from mimo_runtime.groups import ensure_one_rank_world, one_rank_world
from mimo_runtime.launch.cli import main

TOPOLOGY = os.path.join(os.path.dirname(__file__), "..", "..", "topologies", "vlm-4rank.yaml")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(autouse=True)
def no_world_before():
    assert not dist.is_initialized(), "a process group outlived its test module (tests/conftest.py ends those)"
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("command", [["params", TOPOLOGY], ["check", TOPOLOGY]])
def test_in_process_commands_end_the_world_they_start_and_its_threads(command, capsys):
    assert main(command) == 0  # the first run's imports start their own threads; they stay
    gc.collect()
    before = threads()
    for _ in range(3):
        assert main(command) == 0
        assert not dist.is_initialized()
    gc.collect()
    # each build adds about 60 gloo threads (20 groups of 3) while it lives
    assert threads() <= before + 2, (before, threads())


def test_a_world_that_was_there_is_left_up():
    assert ensure_one_rank_world() is True
    with one_rank_world():
        assert main(["params", TOPOLOGY]) == 0
    assert dist.is_initialized() and dist.get_world_size() == 1
    assert ensure_one_rank_world() is False


def test_one_rank_world_ends_what_it_started():
    with one_rank_world():
        assert dist.is_initialized() and dist.get_world_size() == 1
    assert not dist.is_initialized()


def test_a_from_pretrained_model_takes_its_groups_when_it_is_collected(tmp_path):
    from mimo_runtime.hf import from_pretrained
    from tests.hf.tiny import save_llama

    save_llama(tmp_path)
    first = from_pretrained(str(tmp_path))  # the first build's imports start their own threads
    del first
    gc.collect()
    before = threads()
    models = [from_pretrained(str(tmp_path)) for _ in range(3)]
    assert threads() >= before + 3 * 20  # each holds about 20 gloo groups while it lives
    del models
    gc.collect()
    assert threads() <= before + 2, (before, threads())
    assert dist.is_initialized() and dist.get_world_size() == 1  # the world stays for the next model
