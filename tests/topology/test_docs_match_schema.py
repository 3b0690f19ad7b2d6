"""docs/topology.md documents every key of the topology schema with the schema's own doc text."""

import dataclasses
import re
from pathlib import Path

import pytest

from mimo_runtime.topology import Module, Parallel, Topology, Train
from mimo_runtime.topology.data import BlendPart, DataFiles, Heldout
from mimo_runtime.topology.schema import DataFactory, ModelFactory, Optimizer, Pretrained

DOC = (Path(__file__).resolve().parents[2] / "docs" / "topology.md").read_text()
SECTIONS = {"Top level": Topology, "`modules.NAME`": Module, "`modules.NAME.parallel`": Parallel, "`train`": Train,
            "`train.optimizer`, `modules.NAME.optimizer`": Optimizer, "`modules.NAME.pretrained`": Pretrained,
            "`model` (a factory)": ModelFactory, "`data`": DataFactory, "`data` (files on disk)": DataFiles,
            "`data.heldout`": Heldout, "`data.blend[]`": BlendPart}
FILLED_BY_THE_LOADER = {("Module", "name"), ("Topology", "source")}  # not file keys


def documented(section: str) -> dict:
    body = DOC.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]* \| (.*) \|$", body, flags=re.M)
    return dict(rows)


@pytest.mark.parametrize("section", SECTIONS)
def test_every_schema_key_has_a_row_with_its_doc(section):
    cls = SECTIONS[section]
    keys = {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)
            if (cls.__name__, f.name) not in FILLED_BY_THE_LOADER}
    rows = documented(section)
    assert set(rows) == set(keys), f"docs/topology.md '### {section}': add or remove rows to match {cls.__name__}"
    for key, doc in keys.items():
        assert doc in rows[key], f"docs/topology.md '### {section}' row `{key}` must contain: {doc}"
