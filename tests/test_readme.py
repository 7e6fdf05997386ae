"""Every number in README.md's tables comes from the results file linked in the same row."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*\.\d+|\d{1,3}(?:,\d{3})+")  # decimals and thousands-separated counts


def rows_with_results():
    for line in (ROOT / "README.md").read_text().splitlines():
        links = re.findall(r"\]\((benchmarks/results/[^)]+\.md)\)", line)
        if line.startswith("|") and links:
            yield line, links


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


def test_every_table_number_is_in_its_linked_results_file():
    checked = 0
    for line, links in rows_with_results():
        text = " ".join((ROOT / link).read_text() for link in links)
        cells = re.sub(r"\[[^\]]*\]\([^)]*\)", "", line)  # numbers inside link texts and addresses are names
        for number in NUMBER.findall(cells):
            assert number in text, f"{number} in README row {line[:60]!r} is not in {links}"
            checked += 1
    assert checked >= 10
