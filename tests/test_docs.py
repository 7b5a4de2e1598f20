"""The documents a newcomer reads first: every relative link resolves, and the README's code runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.audio import speechlike_wave
from service.audio_input import encode_wav

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "engine" / "checkpoints" / "default" / "MODEL_CARD.md",
]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens."""
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M):
        out.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return out


def broken_links(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)  # links in code are not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert doc.exists()
    assert broken_links(doc) == []


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text(
        "# Real heading\n[ok](#real-heading) [gone](b.md) [bad](#nope) "
        "[web](https://example.com)\n```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(tmp_path / "a.md") == ["b.md (no such file)", "#nope (no such heading)"]


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    assert "./run serve" in head and "./run test" in head


def test_readme_python_snippet_runs(tmp_path):
    """The README's only Python block, run as written against a reference clip in its folder."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    (tmp_path / "ref.wav").write_bytes(encode_wav(speechlike_wave(4.0, 24000, floor=0.05), 24000))
    (tmp_path / "snippet.py").write_text(blocks[0])
    run = subprocess.run(
        [sys.executable, "snippet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    finished = [line for line in run.stdout.splitlines() if " samples" in line]
    assert len(finished) == 1, run.stdout
    reason, samples = finished[0].split()[0], int(finished[0].split()[1])
    assert reason in ("eos", "length") and samples > 0
    assert "EngineStats(" in run.stdout
