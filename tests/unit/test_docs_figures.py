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


RESULTS = {"rates": [{"ns": 93.2}, {"ns": 91.7}, {"ns": 47.5}], "samples": {"bare LRU hit": [65, 58, 61]},
           "a": 74, "b": 61}


@pytest.mark.parametrize(("expression", "want"), [
    ("a", 74.0),
    ("rates.1.ns", 91.7),
    ("rates.0~1.ns.min", 91.7),
    ("rates.*.ns.max", 93.2),
    ("samples.bare LRU hit.min", 58.0),
    ("samples.bare LRU hit.median", 61.0),
    ("a / b", 74 / 61),
    ("a - b", 13.0),
    ("rates.0~1.ns.max - samples.bare LRU hit.min", 93.2 - 58),
])
def test_a_figure_may_be_a_small_derivation(expression: str, want: float) -> None:
    assert docs_figures._evaluate(RESULTS, expression) == pytest.approx(want)


def test_many_values_need_min_or_max() -> None:
    with pytest.raises(ValueError, match="min, max or median"):
        docs_figures._evaluate(RESULTS, "rates.*.ns")


def test_a_marker_may_name_a_history_file_and_a_ratio() -> None:
    (match,) = docs_figures.FIGURE.finditer(
        "1.25x<!-- = history/packet_cost-98fe15d.json:figures.12.median_ns / figures.2.median_ns:.2f -->")
    assert match["file"] == "history/packet_cost-98fe15d.json"
    assert docs_figures.figure_text(match) == "1.25"


def test_a_hand_edited_derived_figure_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("pyvs 90 ns<!-- = forwarding.json:rates.0~3.director_bpf_ns.min:.0f --> a packet\n")
    (found,) = docs_figures.problems(doc)
    assert found.startswith("README.md:1: shows 90, forwarding.json says ")
