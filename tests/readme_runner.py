"""Run the README's command blocks against a lab and compare what they print with what the README shows.

Every fenced block of the README carries a marker, an HTML comment on the line before it (invisible when
the README is rendered):

    <!-- test: run [in NODE] -->          the block is a bash script (set -e): it must exit 0. `in NODE` runs it
                                          inside that lab node (`pyvs lab exec NODE -- bash ...`). A line ending
                                          in `&` starts a job that runs until the end of the README's section.
    <!-- test: transcript [in NODE] [wait=S] -->
                                          `$ COMMAND` lines, each followed by what it prints (stdout and stderr).
                                          wait=S: retry for up to S seconds until the output matches.
    <!-- test: file PATH -->              the block is the content of the repository's file PATH.
    <!-- test: doctest -->                Python `>>>` examples, run with doctest.
    <!-- test: skip REASON -->            not run; the reason says why (a synopsis with placeholders, a diagram, ...).

In expected output, `«...»` stands for a part that varies from run to run (a count, a time, a PID, a MAC): it
matches any text within the line. A line that is only `...` matches any number of lines. Runs of spaces compare
equal to one space and trailing spaces are ignored, so a column that widens does not fail the comparison.
Commands run from a scratch directory that links the repository's `contrib/`, with the repository's `pyvs` and
`pyvsadm` first on PATH and $PYVS_LAB_PREFIX set; the lab's names (`pyvs-director`, `lab pyvs`) in commands and
outputs are rewritten to that prefix.
"""

from __future__ import annotations

import doctest
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = re.compile(r"^<!-- test: (?P<kind>run|transcript|file|doctest|skip)\b(?P<rest>.*?)-->\s*$")
FENCE = re.compile(r"^```")
VARIABLE = re.compile(r"«[^»]*»")
NODES = ("client", "gateway", "director", "rs1", "rs2", "switch", "attacker", "router", "director2", "director3",
         "director4")
COMMAND_TIMEOUT = 120.0


class ReadmeError(AssertionError):
    """A README block that is not marked, or that does not do what the README shows."""


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    section: str
    kind: str
    options: str
    text: str

    @property
    def node(self) -> str | None:
        found = re.search(r"\bin (\w+)", self.options)
        return found.group(1) if found else None

    @property
    def wait(self) -> float:
        found = re.search(r"\bwait=([\d.]+)", self.options)
        return float(found.group(1)) if found else 0.0


def blocks(text: str) -> list[Block]:
    """Every fenced block of a README, with its marker; an unmarked block is an error."""
    lines = text.splitlines()
    found: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        if FENCE.match(line):
            start = i
            j = i + 1
            while j < len(lines) and not FENCE.match(lines[j]):
                j += 1
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            marker = MARKER.match(lines[k]) if k >= 0 else None
            if marker is None:
                raise ReadmeError(f"README.md:{start + 1}: a fenced block without a `<!-- test: ... -->` marker")
            found.append(Block(start + 1, section, marker["kind"], marker["rest"].strip(),
                               "\n".join(lines[start + 1:j]) + "\n"))
            i = j
        i += 1
    return found


def _normalize(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()


def expected_pattern(expected: str) -> re.Pattern[str]:
    """A regex matching any output that the README's expected text allows."""
    parts: list[str] = []
    for line in expected.splitlines():
        line = _normalize(line)
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces = VARIABLE.split(line)
        parts.append(r"[^\n]*?".join(re.escape(piece) for piece in pieces) + r"\n")
    return re.compile("".join(parts))


def matches(expected: str, actual: str) -> bool:
    normalized = "".join(_normalize(line) + "\n" for line in actual.splitlines())
    return expected_pattern(expected).fullmatch(normalized) is not None


def transcript(text: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a transcript block."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], ""))
        elif pairs:
            command, output = pairs[-1]
            pairs[-1] = (command, output + line + "\n")
        elif line.strip():
            raise ReadmeError(f"a transcript must start with a `$ ` command line, not {line!r}")
    return pairs


@dataclass
class Runner:
    """Runs a README's blocks in order against the lab with the given prefix."""

    prefix: str
    workdir: Path
    log: list[str] = field(default_factory=list)
    _jobs: list[int] = field(default_factory=list)
    _section: str = ""

    def __post_init__(self) -> None:
        contrib = self.workdir / "contrib"
        if not contrib.exists():
            contrib.symlink_to(REPO / "contrib")
        self.env = dict(os.environ)
        self.env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), self.env.get("PATH", "")))
        self.env["PYVS_LAB_PREFIX"] = self.prefix
        self.env.pop("PYVS_PIN_DIR", None)

    def rename(self, text: str) -> str:
        """The lab's default names as this lab's."""
        text = re.sub(rf"\bpyvs-({'|'.join(NODES)})\b", rf"{self.prefix}-\1", text)
        return re.sub(r"\blab pyvs\b", f"lab {self.prefix}", text)

    def _argv(self, script: str, node: str | None) -> list[str]:
        if node is None:
            return ["bash", "-e", "-c", script]
        return ["pyvs", "lab", "exec", node, "--", "bash", "-e", "-c", script]

    def _run(self, script: str, node: str | None) -> subprocess.CompletedProcess[str]:
        output = self.workdir / ".output"
        with output.open("w") as out:  # a file, not a pipe: a job started with `&` must not hold it open
            code = subprocess.run(self._argv(script, node), cwd=self.workdir, env=self.env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT, check=False).returncode
        return subprocess.CompletedProcess([], code, output.read_text(), "")

    def run_block(self, block: Block) -> None:
        if block.section != self._section:
            self.stop_jobs()
            self._section = block.section
        where = f"README.md:{block.line} ({block.section})"
        if block.kind == "skip":
            return
        if block.kind == "file":
            path = REPO / block.options
            if path.read_text() != block.text:
                raise ReadmeError(f"{where}: the block is not the content of {block.options}")
            return
        if block.kind == "doctest":
            self._doctest(block, where)
            return
        if block.kind == "run":
            self._script(block, where)
            return
        for command, expected in transcript(block.text):
            self._transcript(block, where, command, expected)

    def _script(self, block: Block, where: str) -> None:
        jobs = self.workdir / ".jobs"
        lines = []
        for line in self.rename(block.text).splitlines():
            code = re.sub(r"\s{2,}#.*$", "", line).rstrip()
            if code.endswith("&"):  # its own log: the block's output file is reused by the next commands
                log = self.workdir / f".job-{len(self._jobs) + len(lines)}.log"
                code = f'{code[:-1].rstrip()} > "{log}" 2>&1 & echo $! >> "{jobs}"'
            lines.append(code)
        jobs.unlink(missing_ok=True)
        result = self._run("\n".join(lines), block.node)
        if jobs.exists():
            self._jobs += [int(pid) for pid in jobs.read_text().split()]
        self.log.append(f"{where}: run, exit {result.returncode}")
        if result.returncode != 0:
            raise ReadmeError(f"{where}: the block exited {result.returncode}:\n{block.text}\n--- output:\n"
                              f"{result.stdout}")

    def _transcript(self, block: Block, where: str, command: str, expected: str) -> None:
        expected = self.rename(expected)
        deadline = time.monotonic() + block.wait
        while True:
            result = self._run(self.rename(command), block.node)
            if matches(expected, result.stdout):
                self.log.append(f"{where}: $ {command}: as shown")
                return
            if time.monotonic() >= deadline:
                raise ReadmeError(f"{where}: `{command}` does not print what the README shows.\n--- README:\n"
                                  f"{expected}--- printed (exit {result.returncode}):\n{result.stdout}")
            time.sleep(0.5)

    def _doctest(self, block: Block, where: str) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block.text, {}, where, str(README), block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        report: list[str] = []
        runner.run(test, out=report.append)
        if runner.failures:
            raise ReadmeError(f"{where}: doctest failed:\n{''.join(report)}")
        self.log.append(f"{where}: doctest, {runner.tries} examples")

    def stop_jobs(self) -> None:
        """Stop the jobs the README started with `&` (by PID: only what this runner started)."""
        for pid in self._jobs:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                    break
                time.sleep(0.05)
        self._jobs.clear()

    def run_all(self, text: str) -> Iterator[str]:
        try:
            for block in blocks(text):
                self.run_block(block)
                yield f"README.md:{block.line}: {block.kind}"
        finally:
            self.stop_jobs()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
