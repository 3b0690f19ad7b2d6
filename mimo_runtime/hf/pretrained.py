"""`from_pretrained(DIR)`: an HF directory as a colocated one-process MimoModel, for notebooks
and parity checks. It takes the same path as a training topology with `model: {hf: DIR}`
(plan -> groups -> model factory -> keyed init -> HF weights), on a one-rank world."""

import socket
from datetime import timedelta

from mimo_runtime.hf.config import model_dims

IMAGES = "images"


def from_pretrained(directory: str, seed: int = 0, timeout_s: float = 120.0):
    """The MimoModel of `directory` (LLaVA or a *ForCausalLM), in eval mode, on this process.

    Its encoder, if any, is module "images" with encoder key "vision_tower":
    `model(input_ids=..., position_ids=..., modality_inputs={"images": {"vision_tower": {"pixel_values": px}}})`
    returns (logits (B, S, vocab), loss_mask). Starts a one-rank gloo group on 127.0.0.1 when no
    process group exists; an existing one must have world size 1.
    """
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model.factory import build_model
    from mimo_runtime.plan import make_plan
    from mimo_runtime.topology import topology_from_dict

    dims = model_dims(directory)
    one_rank_world(timeout_s)
    modules = {"language": {"kind": "language"}}
    if dims.vision is not None:
        modules[IMAGES] = {"kind": "encoder"}
    topo = topology_from_dict({"model": {"hf": str(directory)},
                               "placement": "colocated", "modules": modules}, source=str(directory))
    plan = make_plan(topo)
    model = build_model(plan, build_module_groups(plan, timeout_s), 0, seed)
    return model.eval()


def one_rank_world(timeout_s: float = 120.0) -> None:
    """A one-rank gloo group on 127.0.0.1 unless one exists (which must then have one rank)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                                timeout=timedelta(seconds=timeout_s))
    if dist.get_world_size() != 1:
        raise RuntimeError(f"a one-process model needs a one-rank world; this process group has "
                           f"{dist.get_world_size()} ranks (use a topology with model: {{hf: DIR}} instead)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
