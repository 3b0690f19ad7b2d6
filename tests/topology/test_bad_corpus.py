"""Every bad topology file fails with exactly the one-line message its first line promises.

Each file under `bad/` starts with `# expect: field.path: message`; the full line a user sees is
`error: tests/topology/bad/NAME.yaml: field.path: message` on stderr, exit code 2, no traceback.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
BAD_DIR = ROOT / "tests" / "topology" / "bad"
BAD = sorted(p.name for p in BAD_DIR.glob("*.yaml"))
MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))

# One per failure family, run through the real CLI (the rest run in-process: same code, faster).
VIA_CLI = ["yaml-unclosed-bracket.yaml", "not-utf8.yaml", "unknown-module-key.yaml",
           "parallel-product-not-ranks.yaml", "edge-cycle.yaml", "tp-does-not-divide-heads.yaml",
           "encoder-dp-splits-microbatch-unevenly.yaml", "empty-file.yaml"]


def expected_line(name: str) -> str:
    first = (BAD_DIR / name).read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{name}: first line must be '# expect: MESSAGE'"
    return f"error: tests/topology/bad/{name}: {first[len('# expect: '):]}"


def test_corpus_covers_at_least_thirty_mistakes():
    assert len(BAD) >= 30
    assert set(VIA_CLI) <= set(BAD)


@pytest.mark.parametrize("name", BAD)
def test_bad_file_fails_with_its_expected_line(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(TopologyError) as err:
        load_topology(f"tests/topology/bad/{name}")
    assert err.value.line() == expected_line(name)
    assert "\n" not in err.value.line()


@pytest.mark.parametrize("name", VIA_CLI)
def test_cli_prints_one_line_and_exits_2(name):
    proc = subprocess.run([MIMO_RUN, "plan", f"tests/topology/bad/{name}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [expected_line(name)]
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
