"""Write ``mbstudy/corpus/python_docs.txt.xz``: the text data set, from Debian's ``python3.11-doc`` package.

``python tools/make_text_corpus.py [HTML_DIR]`` reads the CPython 3.11
documentation's HTML as Debian ships it (``apt-get install python3.11-doc``,
version 3.11.2-6+deb12u8; ``HTML_DIR`` defaults to
``/usr/share/doc/python3.11/html``), keeps the main body of the pages of
:data:`SECTIONS` in a fixed order, and writes it as plain ASCII text:
paragraphs, headings and list items one per line, code blocks as they are,
typographic characters replaced by ASCII ones (curly quotes, dashes, ellipses;
anything else decomposed, then dropped). It prints the text's size and sha256,
which ``mbstudy/text.py`` pins: a different text fails to load rather than
silently changing every run. The licence (``license.html``, converted the same
way) is written beside it as ``python_docs.LICENSE``.

Run once, by hand; nothing runs this at training time, and the library only
reads the compressed file it wrote.
"""

from __future__ import annotations

import hashlib
import html.parser
import lzma
import re
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "mbstudy" / "corpus"
HTML = Path("/usr/share/doc/python3.11/html")
# the prose-heaviest parts of the documentation: the tutorial, the FAQ, the language reference, the HOWTOs
SECTIONS = ("tutorial", "faq", "reference", "howto")
SKIP = {"index.html", "grammar.html", "clinic.html"}  # tables of contents; the grammar and Argument Clinic are code

ASCII = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "--", "\u2026": "...",
         "\u00a0": " ", "\u00b6": "", "\u2192": "->", "\u00d7": "x", "\u2264": "<=", "\u2265": ">=", "\u2260": "!="}
BLOCK = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "tr", "caption", "div", "section", "table", "ul",
         "ol", "dl", "blockquote", "figure"}


class _Text(html.parser.HTMLParser):
    """The text of ``<div role="main">``: blocks on their own lines, ``<pre>`` verbatim, header links dropped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # div nesting inside the main div (0: outside it)
        self.pre = 0
        self.skip = 0
        self.out: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.depth == 0:
            if tag == "div" and a.get("role") == "main":
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag == "a" and "headerlink" in (a.get("class") or ""):
            self.skip += 1
        if tag == "pre":
            self.pre += 1
            self.out.append("\n")
        elif tag in BLOCK:
            self.out.append("\n")
            if tag == "li":
                self.out.append("- ")
        elif tag == "br":
            self.out.append("\n")

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag == "a" and self.skip:
            self.skip -= 1
        if tag == "pre":
            self.pre -= 1
            self.out.append("\n")
        elif tag in BLOCK:
            self.out.append("\n")
        if tag == "div":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth == 0 or self.skip:
            return
        self.out.append(data if self.pre else re.sub(r"\s+", " ", data))


def to_ascii(text: str) -> str:
    text = "".join(ASCII.get(c, c) for c in text)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def page_text(path: Path) -> str:
    p = _Text()
    p.feed(path.read_text(encoding="utf-8"))
    lines = [line.rstrip() if line.strip() else "" for line in to_ascii("".join(p.out)).split("\n")]
    text = "\n".join(line.lstrip(" ") if not line.startswith("    ") else line for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def main(html_dir: Path = HTML) -> int:
    pages = [p for s in SECTIONS for p in sorted((html_dir / s).glob("*.html")) if p.name not in SKIP]
    if not pages:
        print(f"error: no pages under {html_dir}; apt-get install python3.11-doc", file=sys.stderr)
        return 2
    text = "\n".join(page_text(p) for p in pages)
    assert text.isascii() and "\r" not in text
    raw = text.encode("ascii")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "python_docs.txt.xz").write_bytes(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    (OUT / "python_docs.LICENSE").write_text(page_text(html_dir / "license.html"))
    print(f"{len(pages)} pages, {len(raw):,} characters, sha256 {hashlib.sha256(raw).hexdigest()}")
    print(f"wrote {OUT / 'python_docs.txt.xz'} ({(OUT / 'python_docs.txt.xz').stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HTML))
