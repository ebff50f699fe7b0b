"""The project's own reference is docs/science.md (the brief it was started from does not ship): no tracked
file cites the brief by its file name, and every link into science.md names an anchor the page has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRIEF = re.compile(r"\b" + "SP" + "EC" + r"\b")  # spelled apart, so that this file does not cite it
LINK = re.compile(r"science\.md#([A-Za-z0-9_-]+)")


def tracked_texts() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    texts = {}
    for name in names:
        try:
            texts[name] = (ROOT / name).read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary files (images, checkpoints of the committed runs)
    return texts


def test_no_tracked_file_cites_the_brief():
    hits = [
        f"{name}:{n}"
        for name, text in tracked_texts().items()
        for n, line in enumerate(text.splitlines(), 1)
        if BRIEF.search(line)
    ]
    assert not hits, f"cite docs/science.md instead: {hits[:20]}"


def test_every_link_into_science_md_names_an_anchor_it_has():
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', (ROOT / "docs" / "science.md").read_text()))
    links = {(name, a) for name, text in tracked_texts().items() for a in LINK.findall(text)}
    assert len(links) > 30  # the code's comments, the configs, the tests and the docs all link there
    missing = sorted(f"{name}: #{a}" for name, a in links if a not in anchors)
    assert not missing, missing
