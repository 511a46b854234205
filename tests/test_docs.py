"""The documentation works: README.md's and docs/*.md's Python blocks run, tables match the results, the API builds.

Code blocks, by the fence's info string:

- ```python: runs. The ```python blocks of one page run in order, as one program, in a fresh empty
  folder (the working directory) with this checkout first on ``PYTHONPATH``; a traceback names the page
  and its line. So every such block must run as written, after the ones above it on the same page.
- ```python-gpu (needs a CUDA GPU), ```py-norun (needs something CI lacks: a Ray cluster, an S3
  bucket, credentials, or is a fragment): shown, never run. Use them sparingly; say why in the text.
- ```bash, ```text and a bare ``` are not Python and are not run.

Any other info string fails ``test_fences_are_known``, so a typo never turns a block off silently.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import build_api  # noqa: E402
import gen_tables  # noqa: E402

PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
RUN = "python"
SHOWN = {"python-gpu", "py-norun", "bash", "text", ""}
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
# exec the page's code under its own name: a traceback reads "README.md", line N (N = the page's line);
# run through -c, so a spawned DataLoader worker finds no main script to re-run
BOOT = "import sys; exec(compile(open(sys.argv[1]).read(), sys.argv[2], 'exec'))"


def blocks(text: str) -> list:
    """(info string, first line of the code (1-based), code) of every fenced block."""
    return [(m.group("info").strip(), text.count("\n", 0, m.start("code")) + 1, m.group("code"))
            for m in FENCE.finditer(text)]


def program(text: str) -> str:
    """The page's runnable blocks as one program whose line numbers are the page's."""
    lines = [""] * (text.count("\n") + 1)
    for info, first, code in blocks(text):
        if info == RUN:
            for i, line in enumerate(code.splitlines()):
                lines[first - 1 + i] = line
    return "\n".join(lines) + "\n"


def test_fences_are_known():
    for page in PAGES:
        for info, line, _ in blocks(page.read_text()):
            assert info == RUN or info in SHOWN, f"{page.name}:{line}: unknown fence info string {info!r}"


def test_program_keeps_the_page_lines():
    page = "text\n\n```python\nx = 1\n```\n\n```py-norun\nboom()\n```\n```python\ny = x + 1\n```\n"
    prog = program(page).splitlines()
    assert prog[3] == "x = 1" and prog[10] == "y = x + 1" and "boom()" not in prog


def test_readme_has_a_quickstart_that_runs():
    runnable = [b for b in blocks((ROOT / "README.md").read_text()) if b[0] == RUN]
    assert len(runnable) >= 8, "the README's quickstart lost its runnable blocks"


def _run(page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path.parent / f"{tmp_path.name}.{page.stem}.py"  # outside the folder the blocks see
    script.write_text(program(page.read_text()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", BOOT, str(script), page.name], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("page", [p for p in PAGES if any(b[0] == RUN for b in blocks(p.read_text()))],
                         ids=lambda p: p.name)
def test_page_blocks_run_in_order(page, tmp_path):
    out = _run(page, tmp_path)
    assert out.returncode == 0, f"{page.name}'s python blocks failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"


def test_a_failing_block_names_its_page_line(tmp_path):
    page = tmp_path.parent / "page.md"
    page.write_text("intro\n\n```python\nx = 1\n```\n\n```python\nundefined_name\n```\n")
    (tmp_path / "run").mkdir()
    out = _run(page, tmp_path / "run")
    assert out.returncode != 0 and 'File "page.md", line 8' in out.stderr


def test_generated_tables_match_bench_results():
    assert not gen_tables.stale(), "run: python docs/gen_tables.py (bench/results changed)"


def test_generated_tables_are_present_and_checked(tmp_path):
    pages = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}
    spans = [m.group("name") for t in pages.values() for m in gen_tables.SPAN.finditer(t)]
    assert set(spans) == set(gen_tables.TABLES), "every generated table appears in a page, once or more"
    # a hand-edited table is stale
    name, text = next((n, t) for n, t in pages.items() if "gen_tables: headline" in t)
    (tmp_path / name).write_text(text.replace("x less", "x fewer", 1))
    assert list(gen_tables.stale(tmp_path)) == [tmp_path / name]


def test_api_reference_builds_without_warnings(tmp_path):
    code = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'docs')!r}]; import build_api; " \
           f"sys.exit(build_api.main([{str(tmp_path / 'api')!r}]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "pdoc:" not in out.stderr
    for module in build_api.MODULES:
        assert (tmp_path / "api" / f"{module}.html").stat().st_size > 1000


def test_api_build_fails_on_a_pdoc_warning(tmp_path):
    (tmp_path / "broken_mod.py").write_text('"""A module whose __all__ names nothing."""\n__all__ = ["missing"]\n')
    sys.path.insert(0, str(tmp_path))
    try:
        problems = build_api.build(tmp_path / "out", ["broken_mod"])
    finally:
        sys.path.remove(str(tmp_path))
    assert problems and "missing" in problems[0]
