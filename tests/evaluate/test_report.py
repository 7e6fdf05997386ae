import torch
from PIL import Image

from effigy.evaluate.pictures import labelled_grid
from effigy.evaluate.report import format_value, markdown_table


def test_markdown_table_formats_numbers_and_marks_missing_values():
    table = markdown_table([{"a": 0.123456, "b": 12345678}, {"a": None}], [("a", "A"), ("b", "B")])
    lines = table.splitlines()
    assert lines[0] == "| A | B |" and lines[1] == "|---|---|"
    assert lines[2] == "| 0.1235 | 12,345,678 |"
    assert lines[3] == "| n/a | n/a |"
    assert format_value(True) == "True"


def test_labelled_grid_has_one_row_per_variant(tmp_path):
    rows = {"fp32": torch.ones(3, 1, 4, 4), "w8a8": -torch.ones(3, 1, 4, 4)}
    path = labelled_grid(rows, tmp_path / "grid.png", scale=2, label_width=10)
    image = Image.open(path)
    assert image.size == (10 + 3 * (8 + 2), 2 * (8 + 2) + 2)
    assert image.getpixel((10, 2)) == (255, 255, 255)  # first fp32 tile is white (value +1)
    assert image.getpixel((10, 12)) == (0, 0, 0)  # first w8a8 tile is black (value -1)
