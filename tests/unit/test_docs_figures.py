"""The figures the READMEs quote are those of benchmarks/results/*.json (see tests/docs_figures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import docs_figures


@pytest.mark.parametrize("doc", docs_figures.DOCS, ids=lambda p: str(p.relative_to(docs_figures.REPO)))
def test_quoted_figures_equal_the_results_files(doc: Path) -> None:
    assert docs_figures.problems(doc) == []


def test_the_readmes_quote_figures_from_results_files() -> None:
    readme = docs_figures.DOCS[0].read_text()
    bench = docs_figures.DOCS[1].read_text()
    assert len(list(docs_figures.FIGURE.finditer(readme))) >= 5
    assert len(list(docs_figures.RESULTS_BLOCK.finditer(bench))) >= 5


def test_a_hand_edited_figure_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("restore takes 9.9 s<!-- = control_plane.json:restore_s:.1f --> here\n")
    (found,) = docs_figures.problems(doc)
    assert found.startswith("README.md:1: shows 9.9, control_plane.json says ")
