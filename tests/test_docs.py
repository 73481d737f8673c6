"""The documentation: README.md and docs/ link only to what exists, the CLI reference is the
commands' own help, headline figures are the medians of their records, and code carries no
dates."""

from __future__ import annotations

import importlib
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import page, runs

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), not inside code.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation dropped,
    spaces as hyphens, repeated headings numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_link_check_finds_a_broken_link_and_a_missing_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](nowhere.md) [bad](#no-such)\n")
    assert _anchors(page) == {"title"}
    assert _links(page) == ["#title", "nowhere.md", "#no-such"]


def test_the_cli_reference_is_the_commands_own_help():
    """In a process of its own: the commands' choices come from registries, which other tests
    extend in this one."""
    generated = subprocess.run([sys.executable, "-m", "search.cli.reference"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    written = (ROOT / "docs" / "cli.md").read_text()
    assert written == generated, "docs/cli.md is stale: make docs"
    assert "## fmsearch run" in written and "--budget-hours" in written


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: guides go in docs/"
    text = "\n".join(lines)
    assert "make run" in text and "make test" in text


def test_the_two_hour_median_quoted_is_the_record_s():
    """README.md and docs/results.md quote the median of every two-hour run on record, and the
    champion run's page lists each of them."""
    two_hours = [r for r in runs("champion_run") if r["hours"] == 2]
    accuracies = [r["result"]["test_accuracy"] for r in two_hours]
    median = f"{statistics.median(accuracies):.2%}"
    spread = f"{min(accuracies):.2%}"[:-1] + "-" + f"{max(accuracies):.2%}"
    for name in ("README.md", "docs/results.md", "benchmarks/results/champion_run.md"):
        text = (ROOT / name).read_text()
        assert (
            f"median test accuracy is {median}" in text
            or f"median {median}" in text
            or (f"median test accuracy **{median}**" in text)
        ), name
        assert spread in text, name
    page = (ROOT / "benchmarks" / "results" / "champion_run.md").read_text()
    assert all(f"| {r['label']} | {r['result']['test_accuracy']:.2%} |" in page for r in two_hours)


def test_every_result_page_shows_its_latest_run():
    """Each benchmark keeps one page, written from its JSON: the latest run's table, the
    command that reproduces it and the machine; the earlier runs stay in the JSON."""
    pages = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    assert {p.stem for p in pages} == {
        p.stem for p in (ROOT / "benchmarks" / "results").glob("*.json")
    }
    for path in pages:
        history = runs(path.stem)
        # A benchmark whose page sums up all its runs has a ``summary`` (champion_run's medians).
        module = importlib.import_module(f"benchmarks.{path.stem}")
        latest, summary = history[-1], getattr(module, "summary", None)
        text = path.read_text()
        assert text == page(path.stem, history, summary=summary), f"{path.name} is not its JSON's"
        assert latest["table"].strip() in text, path.name
        assert f"Reproduce: `{latest['reproduce']}`" in text, path.name
        assert latest["machine"]["cpu"] in text, path.name


def test_no_code_carries_a_date():
    dated = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in ("search", "runners", "spaces")
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b20\d\d-\d\d-\d\d\b", line)
    ]
    assert not dated, "dates belong in benchmarks/results/, not in code: " + ", ".join(dated)
