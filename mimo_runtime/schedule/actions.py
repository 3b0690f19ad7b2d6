"""Schedule actions: one record per thing a stage node does, with a compact printable form.

`images.0:F3`, `images.1:SEND_F3>language.0`, `language.0:RECV_F3<images.1`, `language.0:REDUCE`,
`*.0:OPT`. A chunk other than 0 (interleaved PP: a rank's virtual stage c * pp + stage) prints as
`images.0c1:F3`, and a peer's chunk likewise (`language.1:SEND_F3>language.0c1`: the last stage's
chunk 0 feeds the first stage's chunk 1). `W` is a weight-gradient action (zero-bubble schedules split
each backward into B, the input gradient, and W): `language.0c1:W3`. `parse_action` reads the same
text back, so schedules can be dumped, diffed and written by hand in tests.
"""

import re
from dataclasses import dataclass
from typing import Optional, Tuple

Node = Tuple[str, int]  # a stage node: (module, pipeline stage); module "*" = every module of a colocated rank

F, B, W = "F", "B", "W"
SEND_F, RECV_F, SEND_B, RECV_B = "SEND_F", "RECV_F", "SEND_B", "RECV_B"
REDUCE_GRADS, OPT_STEP = "REDUCE_GRADS", "OPT_STEP"

COMPUTE_KINDS = (F, B, W)  # W: the weight gradient of a B that left it for later (zero bubble)
SEND_KINDS = (SEND_F, SEND_B)
RECV_KINDS = (RECV_F, RECV_B)
STEP_KINDS = (REDUCE_GRADS, OPT_STEP)  # once per step, not tied to a microbatch
KINDS = COMPUTE_KINDS + SEND_KINDS + RECV_KINDS + STEP_KINDS

NO_MICROBATCH = -1  # the `mb` of step-level actions

_SHORT = {REDUCE_GRADS: "REDUCE", OPT_STEP: "OPT"}
_LONG = {v: k for k, v in _SHORT.items()}


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    module: str
    stage: int
    mb: int
    chunk: int = 0
    peer: Optional[Node] = None  # the other stage node of a send or receive
    peer_chunk: int = 0  # the chunk on `peer` the message comes from or goes to

    @property
    def node(self) -> Node:
        return (self.module, self.stage)

    def __str__(self) -> str:
        return f"{self.module}.{self.stage}{f'c{self.chunk}' if self.chunk else ''}:{self.body()}"

    def cell(self) -> str:
        """`body()` with the chunk in front (`c1:F3`): what a node's grid row shows."""
        return f"c{self.chunk}:{self.body()}" if self.chunk else self.body()

    def body(self) -> str:
        """The part after `module.stage:`, which is all a grid row needs."""
        if self.kind in STEP_KINDS:
            return _SHORT[self.kind]
        text = f"{self.kind}{self.mb}"
        if self.peer is not None:
            arrow = ">" if self.kind in SEND_KINDS else "<"
            text += f"{arrow}{self.peer[0]}.{self.peer[1]}{f'c{self.peer_chunk}' if self.peer_chunk else ''}"
        return text


def step_action(kind: str, node: Node) -> Action:
    return Action(kind, node[0], node[1], NO_MICROBATCH)


_NAME = r"[^\s.:<>]+"
_PATTERN = re.compile(
    rf"(?P<module>{_NAME})\.(?P<stage>\d+)(?:c(?P<chunk>\d+))?:"
    r"(?P<kind>SEND_F|RECV_F|SEND_B|RECV_B|REDUCE|OPT|F|B|W)(?P<mb>\d+)?"
    rf"(?:(?P<arrow>[<>])(?P<pmod>{_NAME})\.(?P<pstage>\d+)(?:c(?P<pchunk>\d+))?)?")


def parse_action(text: str) -> Action:
    """The inverse of `str(action)`; raises ValueError naming what is wrong with `text`."""
    m = _PATTERN.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"cannot parse action {text!r}: expected e.g. 'images.0:F3', "
                         "'images.1:SEND_F3>language.0' or 'language.0:REDUCE'")
    kind = _LONG.get(m["kind"], m["kind"])
    peer = (m["pmod"], int(m["pstage"])) if m["arrow"] else None
    if kind in STEP_KINDS:
        if m["mb"] is not None or peer is not None:
            raise ValueError(f"cannot parse action {text!r}: {m['kind']} takes no microbatch or peer")
        return Action(kind, m["module"], int(m["stage"]), NO_MICROBATCH, int(m["chunk"] or 0))
    if m["mb"] is None:
        raise ValueError(f"cannot parse action {text!r}: {kind} needs a microbatch number")
    wanted = ">" if kind in SEND_KINDS else "<" if kind in RECV_KINDS else None
    if m["arrow"] != wanted:
        need = f"a peer after '{wanted}'" if wanted else "no peer"
        raise ValueError(f"cannot parse action {text!r}: {kind} takes {need}")
    return Action(kind, m["module"], int(m["stage"]), int(m["mb"]), int(m["chunk"] or 0), peer,
                  int(m["pchunk"] or 0))
