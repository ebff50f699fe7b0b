"""The one table formatter of `nfbench summary` and `nfbench report`."""

from __future__ import annotations

import pandas as pd

from nfbench.analysis.tables import format_table

FRAME = pd.DataFrame({"model": ["resnet20", "wrn"], "params": ["272,474", "36,479,194"], "note": [None, float("nan")]})


def test_markdown_is_one_unpadded_line_per_row_missing_as_dash():
    assert format_table(FRAME, markdown=True).splitlines() == [
        "| model | params | note |",
        "|---|---|---|",
        "| resnet20 | 272,474 | - |",
        "| wrn | 36,479,194 | - |",
    ]


def test_plain_text_pads_columns_and_right_aligns_the_named_ones():
    assert format_table(FRAME, right={"params"}).splitlines() == [
        "model         params  note",
        "--------  ----------  ----",
        "resnet20     272,474  -",
        "wrn       36,479,194  -",
    ]
