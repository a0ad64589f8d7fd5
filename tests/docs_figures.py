"""Figures in the READMEs come from the results files the benchmarks write.

Two markers, HTML comments that do not show when the README is rendered:

    1.4 ms<!-- = control_plane.json:one_real_change_s:.1f*1000 -->
        the number just before the marker (a short unit may sit between) is the value at that path of
        benchmarks/results/control_plane.json (dots walk into objects and lists), times the scale, in that format;
        a path may take every item of a list (`*`) or some (`0~3`, both ends included) and end in `min`, `max`
        or `median` (`rates.0~3.director_bpf_ns.min`, `samples.bare LRU hit.min`), and two paths may be divided or
        subtracted (`a / b`, `a - b`, spaces around the sign); the file may be `history/NAME-COMMIT.json`,
        a results file of an earlier run (see benchmarks/results/history/README.md);
    <!-- results: forwarding.json -->   (the line before a fenced block)
        the block's lines, without its `$ command` lines, are the file's "summary", the table the benchmark
        printed when it wrote the file.

`python -m tests.docs_figures` rewrites both kinds from the results files after a benchmark run.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCS = (REPO / "README.md", REPO / "benchmarks" / "README.md")
FIGURE = re.compile(r"(?P<shown>\d[\d.,]*)(?P<unit>\s?[^\s<\d]{0,3})"
                    r"<!-- = (?P<file>[\w./-]+):(?P<path>[^:<>]+):(?P<format>[^\s*]*)(?:\*(?P<scale>[\d.e+-]+))? -->")
RESULTS_BLOCK = re.compile(r"^<!-- results: (?P<file>[\w./-]+) -->\n```[^\n]*\n(?P<body>.*?)^```", re.M | re.S)


OPERATION = re.compile(r"\s([/-])\s")
REDUCE = {"min": min, "max": max, "median": statistics.median}


def _value(data: Any, path: str) -> Any:
    """The value at a dotted path; `*` or `I~J` take many items of a list, `min`, `max` or `median` make them one."""
    values, many = [data], False
    for part in path.split("."):
        if part in REDUCE:
            values, many = [REDUCE[part](values if many else values[0])], False
        elif part == "*" or "~" in part:
            first, _, last = part.partition("~")
            values = [item for value in values
                      for item in (value if part == "*" else value[int(first):int(last) + 1])]
            many = True
        else:
            values = [value[int(part)] if isinstance(value, list) else value[part] for value in values]
    if many:
        raise ValueError(f"{path}: many values; end the path in min, max or median")
    return values[0]


def _evaluate(data: Any, expression: str) -> float:
    """A path's value, or two paths' quotient (`a / b`) or difference (`a - b`)."""
    left, *operation = OPERATION.split(expression, maxsplit=1)
    value = float(_value(data, left))
    if not operation:
        return value
    sign, right = operation
    other = float(_value(data, right))
    return value / other if sign == "/" else value - other


def _load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def figure_text(match: re.Match[str]) -> str:
    """What the number before a figure marker should read."""
    value = _evaluate(_load(match["file"]), match["path"]) * float(match["scale"] or 1)
    return format(value, match["format"])


def block_text(name: str, body: str) -> str:
    """A results block as the file's summary would print it, keeping the block's `$ command` lines."""
    commands = [line for line in body.splitlines() if line.startswith("$ ")]
    summary = [line.rstrip() for line in _load(name)["summary"]]
    return "".join(line + "\n" for line in commands + summary)


def problems(path: Path) -> list[str]:
    """Every figure or results block of one document that differs from the results files."""
    text = path.read_text()
    found: list[str] = []
    for match in FIGURE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        want = figure_text(match)
        if match["shown"] != want:
            found.append(f"{path.name}:{line}: shows {match['shown']}, {match['file']} says {want}")
    for match in RESULTS_BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match["body"] != block_text(match["file"], match["body"]):
            found.append(f"{path.name}:{line}: the block is not the summary in {match['file']}")
    return found


def rewrite(path: Path) -> None:
    text = path.read_text()
    text = FIGURE.sub(lambda m: figure_text(m) + m.group(0)[len(m["shown"]):], text)
    text = RESULTS_BLOCK.sub(lambda m: m.group(0)[:m.start("body") - m.start()] + block_text(m["file"], m["body"])
                             + m.group(0)[m.end("body") - m.start():], text)  # by position: a body may be empty
    path.write_text(text)


if __name__ == "__main__":
    for doc in DOCS:
        rewrite(doc)
    left = [problem for doc in DOCS for problem in problems(doc)]
    print("\n".join(left) or "figures and results blocks match benchmarks/results", file=sys.stderr)
    sys.exit(1 if left else 0)
