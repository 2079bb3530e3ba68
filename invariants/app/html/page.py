"""The HTML around the plots: one self-contained document (inline CSS and SVG, no script, no
font, image or style sheet fetched from anywhere), escaping, tables and sections.

Everything a user wrote or a run recorded (script paths, module names, messages) goes
through `esc`; only the SVG the figures module produced is inserted as markup.
"""
from __future__ import annotations

import html
import time
from typing import Any, Iterable, List, Optional, Sequence

from invariants import __version__

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d232b; margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 30px 0 8px; border-bottom: 1px solid #dde3ea;
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
code, .mono { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
.sub { color: #55606e; margin: 0 0 12px; }
.verdict { border-radius: 6px; padding: 12px 16px; margin: 14px 0; border: 1px solid; }
.verdict b { font-size: 20px; margin-right: 10px; }
.v-ok { background: #e8f6ec; border-color: #7cc493; } .v-failed { background: #fdecec; border-color: #e49a9a; }
.v-incomplete { background: #fff5e0; border-color: #e6b95c; } .v-crashed { background: #f6e1e8; border-color: #b9546f; }
.cause { border-left: 4px solid #c0392b; background: #fbf6f6; padding: 8px 12px; margin: 10px 0; }
.cause.warning { border-color: #d68910; background: #fdf9f1; } .cause.unobserved { border-color: #b7950b; }
.cause .title { font-weight: 600; } .cause .fix { margin-top: 4px; } .cause .meta { color: #55606e; font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #dde3ea; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f6f9; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figure { margin: 8px 0 16px; overflow-x: auto; } .figure svg { max-width: 100%; height: auto; }
.tall { max-height: 900px; overflow-y: auto; border: 1px solid #eef1f4; }
.note { color: #55606e; font-size: 13px; } .warn { color: #9a5b00; }
details > summary { cursor: pointer; color: #1f4e9a; margin: 6px 0; }
footer { color: #77818d; font-size: 12px; margin-top: 36px; border-top: 1px solid #eef1f4; padding-top: 8px; }
"""


# The browser itself holds the page to being self-contained: no script runs, nothing is fetched.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def esc(value: Any) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def document(title: str, body: Sequence[str]) -> str:
    """A complete HTML page: the title, inline CSS, and the body's parts in order."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<meta name=\"generator\" content=\"invar {esc(__version__)}\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def section(title: str, parts: Iterable[str], anchor: str) -> str:
    """An <h2> section with an id (so that a link can point at it)."""
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """A table of escaped cells; columns listed in `numeric` align right."""
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
                 for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def paragraph(text: str, cls: Optional[str] = None) -> str:
    return f'<p class="{esc(cls)}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def figure(svg: str, caption: str = "", tall: bool = False) -> str:
    """An inline SVG figure (the figures module's output, inserted as markup) with a caption."""
    cls = "figure tall" if tall else "figure"
    cap = f'<div class="note">{esc(caption)}</div>' if caption else ""
    return f'<div class="{cls}">{svg}</div>{cap}'


def collapsed(summary: str, parts: Iterable[str]) -> str:
    """Content folded under a <details> summary (opens without JavaScript)."""
    return f"<details><summary>{esc(summary)}</summary>\n" + "\n".join(parts) + "\n</details>"


def footer(lines: Iterable[str]) -> str:
    """The page's footer: what produced it, when, and the notes on what it could not draw."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    items = [f"invar {esc(__version__)}, rendered {esc(stamp)}"] + [esc(line) for line in lines]
    return "<footer>" + "<br>\n".join(items) + "</footer>"


def bullet_list(items: Iterable[str]) -> str:
    """An unordered list of escaped items ("" for none)."""
    lis: List[str] = [f"<li>{esc(i)}</li>" for i in items]
    return "<ul>" + "".join(lis) + "</ul>" if lis else ""
