"""The one markdown table writer."""

from __future__ import annotations

import pytest

from handseg.format.markdown import markdown_table


def test_table_with_alignment_and_escaped_pipes():
    text = markdown_table(["name", "dice", "ok"], [["finger-1", 0.95, "yes"], ["a|b", "0.5", ""]], "lrc")
    assert text.splitlines() == ["| name | dice | ok |", "| --- | ---: | :---: |", "| finger-1 | 0.95 | yes |",
                                 "| a\\|b | 0.5 |  |"]
    assert markdown_table(["x"], []) == "| x |\n| --- |"


@pytest.mark.parametrize("rows, align", [([["1", "2"]], None), ([["1"]], "q"), ([["1"]], "lr")])
def test_ragged_rows_and_bad_alignment_are_refused(rows, align):
    with pytest.raises(ValueError):
        markdown_table(["one"], rows, align)
