"""The README runner's rules (tests/readme_runner.py), and the README blocks that need no lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.readme_runner import README, ReadmeError, Runner, blocks, matches, transcript


def test_an_unmarked_block_is_an_error() -> None:
    with pytest.raises(ReadmeError, match="README.md:3: a fenced block without"):
        blocks("# A\n\n```sh\nls\n```\n")


def test_markers_kinds_and_options() -> None:
    (block,) = blocks("## S\n<!-- test: transcript in director wait=5 -->\n```\n$ true\n```\n")
    assert (block.kind, block.node, block.wait, block.section, block.line) == ("transcript", "director", 5.0, "S", 3)
    assert transcript(block.text) == [("true", "")]


def test_variable_parts_and_elided_lines_and_loose_spaces() -> None:
    assert matches("pid «6721» up\n", "pid 1 up\n")
    assert matches("a  b\n...\nz\n", "a b   \nx\ny\nz\n")
    assert matches("a\n...\nz\n", "a\nz\n")
    assert not matches("pid «6721» up\n", "pid 1 down\n")
    assert not matches("a\nz\n", "a\nx\nz\n")
    assert not matches("split: rs1 5, rs2 5\n", "split: rs1 6, rs2 4\n")


def test_every_readme_block_is_marked_and_the_labless_ones_hold(tmp_path: Path) -> None:
    found = blocks(README.read_text())
    assert {b.kind for b in found} == {"run", "transcript", "file", "doctest", "skip"}
    assert all(b.options for b in found if b.kind == "skip"), "a skipped block says why"
    runner = Runner("pyvsx", tmp_path)
    for block in found:
        if block.kind in ("file", "doctest"):
            runner.run_block(block)


def test_a_file_block_that_drifted_fails(tmp_path: Path) -> None:
    (block,) = blocks("<!-- test: file contrib/lab-director.toml -->\n```toml\n[director]\n```\n")
    with pytest.raises(ReadmeError, match="is not the content of contrib/lab-director.toml"):
        Runner("pyvsx", tmp_path).run_block(block)
