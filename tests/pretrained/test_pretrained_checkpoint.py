"""`pretrained: {format: checkpoint}`: one module's weights from a checkpoint this runtime saved
(DCP), partial by construction; errors name what does not fit. Single process; DCP resharding
across topologies is train/checkpoint.py's own property (tests/checkpoint)."""

import pytest
import torch

from mimo_runtime.errors import UserError
from mimo_runtime.model import global_parameters
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.checkpoint import save_checkpoint
from mimo_runtime.train.config import RunConfig
from mimo_runtime.train.runtime import Runtime

IMG = "modality_submodules.images."


def runtime(seed: int, pretrained=None) -> Runtime:
    images = {"kind": "encoder", **({"pretrained": pretrained} if pretrained else {})}
    topo = topology_from_dict({"model": "tiny-vlm", "modules": {"images": images, "language": {"kind": "language"}},
                               "train": {"global_batch": 2, "micro_batch": 2}}, source="t.yaml")
    return Runtime(topo, RunConfig(steps=1, seed=seed, colocated=True, nproc=1, progress=False, timeout_s=30), 0)


def values(rt):
    return {n: p.detach().clone() for n, (p, *_rest) in global_parameters(rt.model).items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    rt = runtime(seed=5)
    rt.train_step(0)
    step_dir = save_checkpoint(rt, str(root), 1, keep_last=1)
    return str(root), step_dir, values(rt)


@pytest.mark.parametrize("which", ["root", "step_dir"])
def test_checkpoint_loads_only_the_encoder(saved, which):
    root, step_dir, trained = saved
    own = values(runtime(seed=0))
    got = values(runtime(seed=0, pretrained={"path": root if which == "root" else step_dir, "format": "checkpoint"}))
    for n, v in got.items():
        assert torch.equal(v, trained[n] if n.startswith(IMG) else own[n]), n
    assert any(not torch.equal(own[n], trained[n]) for n in got if n.startswith(IMG))


def test_missing_keys_after_the_map_hook_are_one_error(saved):
    root, _, _ = saved
    with pytest.raises(UserError) as e:
        runtime(seed=0, pretrained={"path": root, "format": "checkpoint", "map": "tests.pretrained.hooks:drop_layers"})
    assert str(e.value).startswith(f"t.yaml: modules.images.pretrained: {root}: 12 missing keys "
                                   "(encoders.digits_vit.block.layers.mlp.linear_fc1.bias, "), str(e.value)


def test_a_directory_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(UserError) as e:
        runtime(seed=0, pretrained={"path": str(tmp_path), "format": "checkpoint"})
    assert str(e.value) == (f"t.yaml: modules.images.pretrained.path: {tmp_path} is neither a checkpoint nor a "
                            "--checkpoint-dir with a 'latest' checkpoint")
