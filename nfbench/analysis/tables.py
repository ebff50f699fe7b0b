"""Tables as text: the one formatter behind ``nfbench summary``'s aligned columns and ``nfbench report``'s
Markdown.  It takes a pandas DataFrame whose cells the caller has formatted (digits, units); a missing
value prints as '-'."""

from __future__ import annotations

from typing import Any, Collection

import pandas as pd


def _cell(value: Any) -> str:
    return "-" if pd.api.types.is_scalar(value) and pd.isna(value) else str(value)


def format_table(frame: pd.DataFrame, markdown: bool = False, right: Collection[str] = ()) -> str:
    """``frame`` as a Markdown table (unpadded: a renderer aligns it), or as plain text: columns padded
    to their widest cell, those named in ``right`` right-aligned, a rule of dashes under the header."""
    header = [str(c) for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    if markdown:
        return "\n".join(
            [
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
                *("| " + " | ".join(row) + " |" for row in rows),
            ]
        )
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]
    lines = [
        "  ".join(c.rjust(w) if name in right else c.ljust(w) for c, w, name in zip(row, widths, header)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
