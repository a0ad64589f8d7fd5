"""Docs that are tested: the README's command blocks, run in order against a lab (tests/readme_runner.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs.lab import lab as lab_api
from pyvs.lab.topology import Topology, default_topology
from tests.readme_runner import README, ReadmeError, Runner, blocks

from .conftest import LAB_PREFIX


@pytest.fixture
def readme_lab() -> Iterator[Topology]:
    """A lab of its own (the README brings it up and down itself); removed at the end whatever happens."""
    topo = default_topology(prefix=f"{LAB_PREFIX}m")
    lab_api.down(topo)
    yield topo
    lab_api.down(topo)


def test_every_readme_command_block_does_what_the_readme_shows(readme_lab: Topology, tmp_path: Path) -> None:
    runner = Runner(readme_lab.prefix, tmp_path)
    ran = list(runner.run_all(README.read_text()))
    kinds = [block.kind for block in blocks(README.read_text())]
    assert len(ran) == len(kinds)
    assert kinds.count("transcript") >= 8 and kinds.count("run") >= 5


def test_a_broken_example_fails_the_runner(readme_lab: Topology, tmp_path: Path) -> None:
    """The README with one shown output changed: the runner must refuse it, naming the command and both texts."""
    text = README.read_text()
    shown = "removed service TCP 198.18.0.100:0 (not the tutorial's) in pyvs-director"
    assert shown in text
    runner = Runner(readme_lab.prefix, tmp_path)
    with pytest.raises(ReadmeError) as failure:
        for _ in runner.run_all(text.replace(shown, shown.replace("not the tutorial's", "not ours"))):
            pass
    message = str(failure.value)
    assert "`pyvs lab up` does not print what the README shows" in message
    assert "(not ours)" in message and "(not the tutorial's)" in message
