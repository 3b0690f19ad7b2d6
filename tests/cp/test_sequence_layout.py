"""plan/sequence.py: the CP/SP cut of a replica's sequence, as pure data."""

import pytest

from mimo_runtime.plan.sequence import SequenceLayout, chunk_ids, local_indices


def test_cp_rank_holds_chunks_r_and_2cp_minus_1_minus_r():
    assert chunk_ids(0, 2) == (0, 3) and chunk_ids(1, 2) == (1, 2)
    assert local_indices(8, 2, 0) == [0, 1, 6, 7]
    assert local_indices(8, 2, 1) == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="not a multiple of 2\\*cp = 4"):
        local_indices(10, 2, 0)


@pytest.mark.parametrize("cp,tsp", [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2)])
@pytest.mark.parametrize("packed", [False, True])
def test_every_position_has_exactly_one_slot_and_slots_split_evenly(cp, tsp, packed):
    layout = (SequenceLayout.packed_from([5, 13, 1], cp, tsp) if packed
              else SequenceLayout.padded(3, 32, cp, tsp))
    per_slot = {s: [] for s in range(layout.num_slots)}
    rows = layout.lengths if packed else [layout.lengths[0]]
    for r in range(cp):
        tokens = layout.local_tokens(r)
        assert len(tokens) == layout.local_length()
        piece = len(tokens) // tsp
        for j, (sample, pos) in enumerate(tokens):
            slot = r * tsp + j // piece
            samples = [sample] if packed else range(3)
            for i in samples:
                assert layout.slot(i, pos) == slot, (r, j, sample, pos)
            per_slot[slot].append((sample, pos))
    everything = sorted(x for v in per_slot.values() for x in v)
    assert everything == sorted((i if packed else 0, p) for i, n in enumerate(rows) for p in range(n))
    assert len({len(v) for v in per_slot.values()}) == 1


def test_packing_pads_each_sequence_to_2cp_and_the_last_to_split_over_tp():
    layout = SequenceLayout.packed_from([5, 13, 1], cp=2, tsp=2)
    assert [n % 4 for n in layout.lengths] == [0, 0, 0]
    assert layout.lengths == (8, 16, 4)
    assert SequenceLayout.packed_from([5, 4], cp=1, tsp=2).lengths == (5, 5)  # 10 tokens split over 2 tp ranks
    assert SequenceLayout.packed_from([5, 3], cp=1, tsp=1).lengths == (5, 3)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        SequenceLayout.padded(2, 36, cp=2, tsp=2)
