"""How a language replica's tokens are cut over its context-parallel and sequence-parallel ranks.

Pure Python: the feeder (which tokens a rank reads), the bridge (which encoder rows a rank gets)
and the attention (which global positions a rank's queries and keys have) all derive their cut
from these functions, so they always agree.

- CP (megatron's load-balanced causal split): a sequence of length L, a multiple of 2*cp, is cut
  into 2*cp chunks and cp rank r holds chunks r and 2*cp-1-r, in that order. Under a causal mask
  early chunks are cheap and late ones dear; pairing them evens the work. A packed (THD) batch
  cuts every sequence this way and concatenates the pieces, sequence by sequence.
- SP (megatron's sequence parallelism, tp > 1): the cp-local sequence is then cut into tp
  contiguous pieces, tp rank t holding piece t.
A *slot* names one such piece, `cp_rank * tsp + sp_rank` (tsp = tp with SP, else 1): every
encoder row (one special token) belongs to exactly one slot.
"""

import math
from dataclasses import dataclass
from itertools import accumulate
from typing import List, Sequence, Tuple


def chunk_ids(cp_rank: int, cp: int) -> Tuple[int, ...]:
    """The 2*cp chunks of a sequence that cp rank `cp_rank` holds, in local order."""
    return (cp_rank, 2 * cp - 1 - cp_rank) if cp > 1 else (0,)


def local_indices(length: int, cp: int, cp_rank: int) -> List[int]:
    """Positions of a sequence of `length` held by `cp_rank`, in local order."""
    if cp == 1:
        return list(range(length))
    if length % (2 * cp):
        raise ValueError(f"sequence length {length} is not a multiple of 2*cp = {2 * cp}")
    c = length // (2 * cp)
    return [k * c + j for k in chunk_ids(cp_rank, cp) for j in range(c)]


def _owner(pos: int, length: int, cp: int) -> Tuple[int, int]:
    """(cp rank holding position `pos`, its index within that rank's part of the sequence)."""
    if cp == 1:
        return 0, pos
    c = length // (2 * cp)
    k, j = divmod(pos, c)
    return (k, j) if k < cp else (2 * cp - 1 - k, c + j)


def pad_multiple(cp: int) -> int:
    """Every (packed) sequence length must be a multiple of this."""
    return 2 * cp if cp > 1 else 1


@dataclass(frozen=True)
class SequenceLayout:
    """The cut of one language replica's microbatch.

    lengths: per sample, the (padded) sequence length the model sees. packed: the samples are
    concatenated into one THD sequence (else each is a row of a (B, S) batch).
    """

    lengths: Tuple[int, ...]
    packed: bool
    cp: int
    tsp: int

    @classmethod
    def padded(cls, num_samples: int, seq_length: int, cp: int, tsp: int) -> "SequenceLayout":
        if seq_length % (pad_multiple(cp) * tsp):
            raise ValueError(f"sequence length {seq_length} is not a multiple of {pad_multiple(cp) * tsp} "
                             f"(2*cp when cp > 1, times tp with sequence parallelism)")
        return cls(tuple([seq_length] * num_samples), False, cp, tsp)

    @classmethod
    def packed_from(cls, used: Sequence[int], cp: int, tsp: int) -> "SequenceLayout":
        """Pack samples that use `used[i]` tokens each: each is padded to a multiple of 2*cp, and the
        last one further so that every cp rank's part splits evenly over the tsp ranks."""
        m = pad_multiple(cp)
        lengths = [max(1, -(-u // m) * m) for u in used]
        unit = math.lcm(m, cp * tsp)
        total = sum(lengths)
        lengths[-1] += -total % unit
        return cls(tuple(lengths), True, cp, tsp)

    @property
    def num_slots(self) -> int:
        return self.cp * self.tsp

    def offsets(self) -> List[int]:
        """Start of each sample in the packed (global) sequence."""
        return [0] + list(accumulate(self.lengths))[:-1]

    def local_length(self) -> int:
        """Tokens per row of one cp rank's part (the packed row when packed)."""
        return sum(self.lengths) // self.cp if self.packed else self.lengths[0] // self.cp

    def slot(self, sample: int, pos: int) -> int:
        """The slot holding position `pos` of sample `sample` (index within this replica)."""
        r, j = _owner(pos, self.lengths[sample], self.cp)
        if self.packed:
            j += sum(self.lengths[:sample]) // self.cp
        return r * self.tsp + j // (self.local_length() // self.tsp)

    def local_tokens(self, cp_rank: int) -> List[Tuple[int, int]]:
        """(sample, position) of every token of one row of `cp_rank`'s part, in local order
        (padded: the positions are the same for every sample; sample is 0)."""
        if not self.packed:
            return [(0, p) for p in local_indices(self.lengths[0], self.cp, cp_rank)]
        return [(i, p) for i, n in enumerate(self.lengths) for p in local_indices(n, self.cp, cp_rank)]

