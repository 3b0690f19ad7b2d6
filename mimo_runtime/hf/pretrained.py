"""`from_pretrained(DIR)`: an HF directory as a colocated one-process MimoModel, for notebooks
and parity checks. It takes the same path as a training topology with `model: {hf: DIR}`
(plan -> groups -> model factory -> keyed init -> HF weights), on a one-rank world."""

from mimo_runtime.hf.config import model_dims

IMAGES = "images"


def from_pretrained(directory: str, seed: int = 0, timeout_s: float = 120.0):
    """The MimoModel of `directory` (LLaVA or a *ForCausalLM), in eval mode, on this process.

    Its encoder, if any, is module "images" with encoder key "vision_tower":
    `model(input_ids=..., position_ids=..., modality_inputs={"images": {"vision_tower": {"pixel_values": px}}})`
    returns (logits (B, S, vocab), loss_mask). Starts the one-rank world of groups/world.py (gloo,
    an in-memory store) when no process group exists; an existing one must have world size 1. The
    world outlives this call; the model's own groups are destroyed when it is garbage-collected.
    """
    from mimo_runtime.groups import build_module_groups, ensure_one_rank_world, release_with
    from mimo_runtime.model.factory import build_model
    from mimo_runtime.plan import make_plan
    from mimo_runtime.topology import topology_from_dict

    dims = model_dims(directory)
    ensure_one_rank_world()
    modules = {"language": {"kind": "language"}}
    if dims.vision is not None:
        modules[IMAGES] = {"kind": "encoder"}
    topo = topology_from_dict({"model": {"hf": str(directory)},
                               "placement": "colocated", "modules": modules}, source=str(directory))
    plan = make_plan(topo)
    groups = build_module_groups(plan, timeout_s)
    model = build_model(plan, groups, 0, seed)
    release_with(model, groups)  # its groups go when the model does
    return model.eval()
