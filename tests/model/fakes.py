"""Light fakes (upstream's mock-grid style) and small builders shared by the model tests."""

import contextlib
import functools
from types import SimpleNamespace
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from megatron.core import parallel_state
from megatron.core.process_groups_config import ProcessGroupCollection

from mimo_runtime.data import collate_modality, collate_tokens, make_dataset
from mimo_runtime.model import build_mimo_model
from mimo_runtime.model.inputs import tokens_per_item
from mimo_runtime.topology.presets import PRESETS

SEED = 11
# the tiny presets' numbers, read from the presets so the tests follow them
H_LM = PRESETS["tiny-vlm"].language.hidden
H_ENC = PRESETS["tiny-vlm"].encoders["images"].hidden
S = PRESETS["tiny-vlm"].language.seq_length
V = PRESETS["tiny-vlm"].language.vocab_size
T_IMG = tokens_per_item("images")
T_AUD = tokens_per_item("audio")


class FakeGroup:
    """A process group that only knows its rank and size; never used for a collective."""

    def __init__(self, rank: int = 0, size: int = 1):
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


def fake_pgs(tp: Tuple[int, int] = (0, 1), pp: Tuple[int, int] = (0, 1)) -> ProcessGroupCollection:
    one = FakeGroup()
    return ProcessGroupCollection(tp=FakeGroup(*tp), cp=one, dp=one, pp=FakeGroup(*pp), dp_cp=one, tp_cp=one,
                                  mp=one, tp_dp_cp=one, embd=one, pos_embd=one)


def fake_grid(rank_offset: int, tp: int = 1, dp: int = 1, pp: int = 1) -> SimpleNamespace:
    return SimpleNamespace(rank_offset=rank_offset, shape=(tp, 1, dp, pp), dim_names=("tp", "cp", "dp", "pp"))


def build(preset: str = "tiny-vlm", grids: Optional[Dict[str, SimpleNamespace]] = None, rank: int = 0):
    """The model `rank` holds under fake `grids` (None: colocated, tp=pp=1); each module's fake
    tp/pp groups report `rank`'s coordinates in that module's grid."""
    names = list(grids) if grids else ["language", "images", "audio"]
    pgs, parallel = {}, {}
    for n in names:
        tp, pp, tp_rank, pp_rank = 1, 1, 0, 0
        if grids:
            g = grids[n]
            tp, pp = g.shape[0], g.shape[3]
            local = rank - g.rank_offset
            inner = g.shape[0] * g.shape[1] * g.shape[2]
            if 0 <= local < inner * pp:
                tp_rank, pp_rank = local % tp, local // inner
        pgs[n] = fake_pgs((tp_rank, tp), (pp_rank, pp))
        parallel[n] = (tp, pp)
    return build_mimo_model(preset, SEED, parallel, pgs, grids, rank)


@functools.lru_cache(maxsize=None)
def dataset(preset: str):
    return make_dataset(preset, "train", 0, size=256)


def indices(preset: str, n: int, with_items: Optional[bool] = None, modality: str = "images") -> List[int]:
    """n sample indices; with_items True/False: only samples with / without `modality` items."""
    ds = dataset(preset)
    keep = [i for i in range(len(ds)) if with_items is None or (ds.num_items(i, modality) > 0) == with_items]
    return keep[:n]


def batch(preset: str, idx: Iterable[int]):
    """(tokens (B, S) dict, modality_inputs) for dataset samples idx."""
    ds = dataset(preset)
    idx = list(idx)
    tokens = collate_tokens([ds.tokens(i) for i in idx])
    inputs = {m: collate_modality([ds.modality(i, m) for i in idx]) for m in ds.modalities}
    return tokens, inputs


def checkpoint_layout(models) -> Dict[str, tuple]:
    """{checkpoint key: (global shape, layer offsets)} over the union of the given ranks' sharded
    state dicts; megatron stacks a block's layers under one key with a leading layer axis."""
    shapes, layers = {}, {}
    for m in models:
        for t in m.sharded_state_dict().values():
            assert shapes.setdefault(t.key, tuple(t.global_shape)) == tuple(t.global_shape), t.key
            layers.setdefault(t.key, set()).add(tuple(t.global_offset[:getattr(t, "prepend_axis_num", 1)]))
    return {k: (shapes[k], sorted(layers[k])) for k in shapes}


def merge_layouts(layouts) -> Dict[str, tuple]:
    """Union of checkpoint_layout results computed on different ranks."""
    shapes, layers = {}, {}
    for layout in layouts:
        for key, (shape, offsets) in layout.items():
            assert shapes.setdefault(key, shape) == shape, key
            layers.setdefault(key, set()).update(offsets)
    return {k: (shapes[k], sorted(layers[k])) for k in shapes}


@contextlib.contextmanager
def no_parallel_state_or_cuda():
    """Make megatron's global parallel_state getters and CUDA initialization raise."""
    saved = {}

    def forbid(name):
        def raiser(*args, **kwargs):
            raise AssertionError(f"parallel_state.{name} was called")
        return raiser

    for name in dir(parallel_state):
        if name.startswith("get_") and callable(getattr(parallel_state, name)):
            saved[(parallel_state, name)] = getattr(parallel_state, name)
            setattr(parallel_state, name, forbid(name))

    def no_cuda(*args, **kwargs):
        raise AssertionError("torch.cuda was initialized")

    saved[(torch.cuda, "_lazy_init")] = torch.cuda._lazy_init
    torch.cuda._lazy_init = no_cuda
    try:
        yield
    finally:
        for (obj, name), value in saved.items():
            setattr(obj, name, value)
