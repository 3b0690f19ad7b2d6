"""The megatron path keeps the runtime's checkpoint format: TorchView assembles each parameter's
full optimizer state from the dp_cp ranks' slices before a save and hands each rank its slices back
after a load (2 gloo ranks, a stand-in for megatron's distributed optimizer: the real one needs CUDA)."""

import torch

from mimo_runtime.launch.spawn import spawn
from tests.gpu.rank_fns import torch_view_round_trip


def test_full_state_from_slices_and_back():
    results = spawn(torch_view_round_trip, 2, timeout_s=300, collective_timeout_s=60)
    want_a = torch.cat([torch.arange(0, 6.0), torch.arange(6, 10.0)])
    for rank, (gathered, lrs, mine, steps, reloaded) in enumerate(results):
        assert torch.equal(gathered["a"]["exp_avg"].view(-1), want_a + 100)  # rank 0's 6 | rank 1's 4
        assert torch.equal(gathered["a"]["exp_avg_sq"].view(-1), want_a + 1000)
        assert gathered["a"]["exp_avg"].shape == (2, 5)
        assert torch.equal(gathered["b"]["exp_avg"], torch.arange(4.0) + 100)  # rank 0 owns none of b
        assert float(gathered["a"]["step"]) == 3.0
        assert lrs == [0.25, 0.25]
        assert steps and all(s == 7.0 for s in steps) and reloaded
    assert torch.equal(results[0][2]["a"], -torch.arange(0, 6.0))
    assert torch.equal(results[1][2]["a"], -torch.arange(6, 10.0))
    assert torch.equal(results[1][2]["b"], -torch.arange(4.0))
