"""The docs site builds strictly, and no relative link or anchor in README or docs/ is broken.

MkDocs (``mkdocs.yml``, ``make docs``) checks the links between pages of docs/ against its
own heading slugs; GitHub renders README.md and docs/ with its own slugs, and README is not
part of the site. The link checker here reads every Markdown file as GitHub does: each
relative link's target exists, and each ``#anchor`` names a heading of the target. A page
must pass both, so its headings keep to text on which the two slug rules agree.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lowercased, punctuation dropped, spaces to -.

    Word characters (letters, digits, ``_``), hyphens and spaces are kept; inline code and
    emphasis marks go, as does a link's target (its text stays).
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks and HTML comments."""
    text = _COMMENT.sub(lambda m: "\n" * m.group().count("\n"), text)
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path``; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text()):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Every link and image target in ``path``'s prose (not in code spans or blocks)."""
    found = []
    for line in prose_lines(path.read_text()):
        found += _LINK.findall(_CODE_SPAN.sub("", line))
    return found


def broken_links(path: Path) -> list[str]:
    """``path``'s relative links whose file or heading does not exist, with the reason."""
    problems = []
    for target in links(path):
        if not target or _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            shown = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest
            problems.append(f"{target}: no file {shown}")
        elif path.is_relative_to(DOCS) and not dest.is_relative_to(DOCS):
            problems.append(f"{target}: outside docs/, so not part of the site")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Quick start (two commands)", "quick-start-two-commands"),
        ("Non-IID data: picking an algorithm", "non-iid-data-picking-an-algorithm"),
        (
            "Differential privacy: accuracy versus epsilon (`bench/privacy_utility.py`)",
            "differential-privacy-accuracy-versus-epsilon-benchprivacy_utilitypy",
        ),
        (
            "Networked deployment against Flower's deployment runtime (`bench/network.py`)",
            "networked-deployment-against-flowers-deployment-runtime-benchnetworkpy",
        ),
        ("Health & fitness", "health--fitness"),
        ("See [the docs](docs/index.md)", "see-the-docs"),
    ],
)
def test_slug_is_githubs(heading, expected):
    assert slug(heading) == expected


def test_repeated_headings_are_numbered_as_on_github(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Results\n## Table\n```\n# not a heading\n```\n## Table\n## Table\n")
    assert anchors(page) == {"results", "table", "table-1", "table-2"}


def test_the_checker_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[ok](#title) [gone](missing.md) [bad](#nowhere) `[code](x.md)`\n"
        "<!-- [pending](later.md) -->\n![img](page.md) [web](https://example.org/x)\n"
    )
    assert broken_links(page) == [
        f"missing.md: no file {tmp_path.resolve() / 'missing.md'}",
        "#nowhere: no heading with anchor #nowhere in page.md",
    ]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path):
    problems = broken_links(path)
    assert not problems, f"broken links in {path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link, anchor or image between pages fails it."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mkdocs build took over {exc.timeout} s")
    missing = "No module named mkdocs" in done.stdout
    hint = " (mkdocs is in the dev extra: pip install -e '.[dev]')" if missing else ""
    assert done.returncode == 0, f"mkdocs build --strict failed{hint}:\n{done.stdout[-3000:]}"
    assert (tmp_path / "index.html").exists()
