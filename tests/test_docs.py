"""The documentation site: it builds with warnings as errors, and its examples run.

The slow test builds the whole site with Sphinx (``-W``, and ``nitpicky`` in ``conf.py``:
every cross-reference to the project must resolve) into a temporary folder, then
runs the pages' ``testcode``/``doctest`` blocks with Sphinx's doctest builder. The fast
tests check the code that writes the generated pages (``docs/_ext/``) on hand-made cases.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import gradsurgery

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

from catalog import ResolverEntry  # noqa: E402
from includes import REPOSITORY, adapt_markdown  # noqa: E402
from pages import MARKER, choosing_table, resolver_page  # noqa: E402

from gradsurgery.resolvers import Sum  # noqa: E402


def _sphinx(builder: str, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sphinx", "-q", "-b", builder, *options, str(DOCS), str(out)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)


# The doctest run skips the pages made of docstrings only (their examples run under
# pytest --doctest-modules), which saves importing and parsing every module again. Its
# warnings (the skipped pages are missing from the tables of contents) are expected:
# the HTML build has already checked the whole site with -W.
_NO_EXAMPLES = "_build,_generated,_inventories,figures/*.py,api.md,resolvers/*"


@pytest.mark.slow
def test_site_builds_without_warnings_and_its_examples_run(tmp_path: Path) -> None:
    html = _sphinx("html", tmp_path / "html", "-W", "--keep-going", "-d", str(tmp_path / "dt"))
    assert html.returncode == 0, f"sphinx html build failed:\n{html.stdout}\n{html.stderr}"
    for name in gradsurgery.available():  # one generated page per registered resolver
        assert (tmp_path / "html" / "resolvers" / f"{name}.html").is_file(), name
    for page in ("quickstart", "concepts", "choosing", "api", "changelog"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in gradsurgery.__all__:  # every public name has its entry
        kind = "module-" if inspect.ismodule(getattr(gradsurgery, name)) else ""
        assert f'id="{kind}gradsurgery.{name}"' in api, name

    doctest = _sphinx(
        "doctest",
        tmp_path / "doctest",
        "-d",
        str(tmp_path / "dt2"),
        "-D",
        f"exclude_patterns={_NO_EXAMPLES}",
    )
    report = tmp_path / "doctest" / "output.txt"
    details = report.read_text(encoding="utf-8") if report.is_file() else ""
    assert doctest.returncode == 0, f"page examples failed:\n{details}\n{doctest.stderr}"
    assert "0 failures in tests" in details
    assert "quickstart" in details  # the quickstart's examples did run


def test_concepts_figure_is_committed_and_its_script_runs(tmp_path: Path) -> None:
    assert (DOCS / "figures" / "conflict_and_dominance.png").is_file()
    script = DOCS / "figures" / "make_figures.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    png = tmp_path / "conflict_and_dominance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _entry(name: str = "plain") -> ResolverEntry:
    return ResolverEntry(name, Sum, "gradsurgery.resolvers.Sum", alias_of=None)


def test_resolver_page_shows_facts_reference_and_toy_plot_when_present(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    page = resolver_page(_entry(), tmp_path, docs)
    assert page.startswith(MARKER)
    assert "# Sum (`plain`)" in page
    assert ".. autoclass:: gradsurgery.resolvers.Sum" in page
    assert "| needs `losses` | no |" in page
    assert "toy" not in page  # no plot yet

    toy = tmp_path / "benchmarks" / "results" / "toy" / "plain.png"
    toy.parent.mkdir(parents=True)
    toy.write_bytes(b"\x89PNG")
    page = resolver_page(_entry(), tmp_path, docs)
    assert "```{figure} ../../benchmarks/results/toy/plain.png" in page


def test_alias_page_points_to_the_first_name_instead_of_documenting_twice(
    tmp_path: Path,
) -> None:
    alias = ResolverEntry("other", Sum, "gradsurgery.resolvers.Sum", alias_of="plain")
    page = resolver_page(alias, tmp_path, tmp_path / "docs")
    assert "autoclass" not in page
    assert "[`plain`](plain.md)" in page
    table = choosing_table([_entry(), alias])
    assert table.count("](resolvers/") == 1
    assert "`other` = `plain`" in table


def test_choosing_table_row_from_metadata() -> None:
    row = next(line for line in choosing_table([_entry()]).splitlines() if "plain" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # method, primary task, uses Gram, needs losses, state, promises
    assert cells[1:5] == ["ignored", "no", "", ""]
    assert "scale-equivariant" in cells[5] and "order-free" in cells[5]


def test_included_markdown_links_and_images_are_adapted(tmp_path: Path) -> None:
    root = tmp_path
    example = root / "examples" / "demo"
    (example / "figures").mkdir(parents=True)
    (example / "figures" / "here.png").write_bytes(b"\x89PNG")
    (example / "train.py").write_text("")
    readme, results = example / "README.md", example / "RESULTS.md"
    results.write_text("# Results\n")
    readme.write_text(
        "# Demo\n"
        "![present](figures/here.png) ![absent](figures/gone.png)\n"
        "See [the results](RESULTS.md#table), [the trainer](train.py), [a folder](figures),\n"
        "[nothing](missing.py), [the web](https://example.org/x.md) and [up](#demo).\n"
        "```\n[inside a fence](train.py)\n```\n"
        "[ref]: train.py\n"
    )
    page_dir = root / "docs" / "flagship"
    text = adapt_markdown(readme, page_dir, root, {results.resolve(): "results.md"})
    lines = text.splitlines()
    assert lines[1] == (
        "![present](../../examples/demo/figures/here.png) "
        "*(figure `examples/demo/figures/gone.png` is not in the repository yet)*"
    )
    assert "[the results](results.md#table)" in lines[2]
    assert f"[the trainer]({REPOSITORY}/blob/main/examples/demo/train.py)" in lines[2]
    assert f"[a folder]({REPOSITORY}/tree/main/examples/demo/figures)" in lines[2]
    assert "nothing (`examples/demo/missing.py`)" in lines[3]
    assert "[the web](https://example.org/x.md)" in lines[3]
    assert "[up](#demo)" in lines[3]
    assert lines[5] == "[inside a fence](train.py)"
    assert lines[7] == f"[ref]: {REPOSITORY}/blob/main/examples/demo/train.py"
