"""report.html: one self-contained page (figures embedded as PNG, SVG and PNG linked beside it).

It opens with the title, the scale warning (when the sweep's scale cannot support conclusions) and the
claims: a plain-language paragraph and the claims table, before any figure; then what the sweep ran and
every report's section. Tables sit in their own horizontally scrolling box, so a wide one never clips
a column at narrow windows; the claims table's text cells wrap.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .reports.base import FullReport, Report, Table
from .scale import SCALE_HEADLINE

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .3em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.paper { color: #555; font-style: italic; }
.lead { font-size: 1.05em; background: #f3f5f8; border-left: 6px solid #4c72b0; padding: .5em 1em; }
.scale { background: #fde8e8; border-left: 6px solid #c44e52; padding: .5em 1em; margin: .6em 0 1em; }
.missing { background: #fff4d6; border-left: 4px solid #e0a800; padding: .4em .8em; margin: .4em 0; }
.notes { color: #444; font-size: .92em; }
.tbl-wrap { max-width: 100%; overflow-x: auto; margin: .5em 0 1.2em; }
table.tbl { border-collapse: collapse; font-size: .86em; table-layout: auto; }
table.tbl th, table.tbl td { border: 1px solid #ddd; padding: .25em .55em; text-align: right; white-space: nowrap; }
table.tbl th { background: #f3f5f8; } table.tbl td:nth-child(-n+3) { text-align: left; }
table.tbl.wrap { width: 100%; }
table.tbl.wrap th, table.tbl.wrap td { white-space: normal; overflow-wrap: break-word; text-align: left; }
table.summary td { border: none; padding: .1em .8em .1em 0; text-align: left; white-space: normal; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } nav a { margin-right: 1em; }
"""


def _esc(text: str) -> str:
    return html.escape(str(text))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    svg = path.with_suffix(".svg").name
    return (
        f'<figure><img alt="{_esc(path.stem)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{_esc(path.stem)} — <a href="{_esc(path.name)}">PNG</a> · '
        f'<a href="{_esc(svg)}">SVG</a></figcaption></figure>'
    )


def _table(table: Table) -> str:
    """The table in its own scrolling box; no index or columns name (a pivot's would read as an empty column)."""
    frame = table.frame.rename_axis(index=None, columns=None)
    classes = "tbl wrap" if table.wrap else "tbl"
    body = frame.to_html(index=False, border=0, classes=classes, escape=True, na_rep="–")
    return f"<p><b>{_esc(table.caption)}</b></p><div class='tbl-wrap'>{body}</div>"


def _items(css: str, heading: str, items: list[str]) -> str:
    return (
        f"<div class='{css}'><b>{_esc(heading)}</b><ul>" + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul></div>"
    )


def _section(rep: Report, lead: bool = False) -> list[str]:
    """One report's section; the lead (claims) shows its summary and tables before its figures and notes."""
    parts = [f"<section id='{rep.key}'><h2>{_esc(rep.title)}</h2><p class='paper'>{_esc(rep.paper)}</p>"]
    parts += [f"<p class='lead'>{_esc(rep.summary)}</p>"] if rep.summary else []
    parts += [f"<div class='missing'>{_esc(m)}</div>" for m in rep.messages]
    notes = ["<ul class='notes'>" + "".join(f"<li>{_esc(n)}</li>" for n in rep.notes) + "</ul>"] if rep.notes else []
    figures = [_img(p) for p in rep.figures if p.is_file()]
    tables = [_table(t) for t in rep.tables]
    parts += tables + figures + notes if lead else notes + figures + tables
    parts.append(f"<p class='notes'><a href='{_esc(rep.key)}.md'>{_esc(rep.key)}.md</a></p></section>")
    return parts


def _sweep(full: FullReport) -> list[str]:
    """What the sweep ran, what it does not cover, its missing cells and the links to every section."""
    parts = [
        "<table class='tbl summary'>"
        + "".join(f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in full.summary)
        + "</table>"
    ]
    if full.coverage:
        parts.append(
            "<p class='notes'><b>Not covered by this sweep:</b> " + "; ".join(map(_esc, full.coverage)) + "</p>"
        )
    if full.messages:
        parts.append(_items("missing", "Missing cells", full.messages))
    parts.append(
        "<nav>"
        + "".join(f"<a href='#{r.key}'>{_esc(r.title.split(':')[0])}</a>" for r in full.reports)
        + "<a href='trials.csv'>trials.csv</a><a href='report.md'>report.md</a></nav>"
    )
    return parts


def render_html(title: str, full: FullReport, out_dir: Path) -> str:
    """The page: title, scale warning, the claims (summary paragraph and table first), the sweep, the reports."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if full.warnings:
        parts.append(_items("scale", f"{SCALE_HEADLINE}:", full.warnings))
    lead = full.lead()
    parts += _section(lead, lead=True) if lead else []
    parts += _sweep(full)
    for rep in full.reports:
        parts += [] if rep is lead else _section(rep)
    parts.append("</body></html>")
    return "\n".join(parts)
