"""The README is a front page: short, its generated tour block and CI's test command in place, and no
paths of a development machine in it or in the docs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for marker in ("<!-- test-command -->", "<!-- tour:begin -->", "<!-- tour:end -->"):
        assert marker in text
    assert "<!-- results:begin -->" in (ROOT / "docs" / "results.md").read_text()


def test_no_development_paths_in_the_readme_or_the_docs():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found = re.findall(r"/work/\S+|/tmp/\S+|\.\./shared/\S+", page.read_text())
        assert not found, f"{page.name}: {found}"


def test_the_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / link).exists(), link
