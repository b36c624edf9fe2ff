"""report.html: one self-contained page (figures embedded as PNG, SVG and PNG linked beside it)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .build import FullReport

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .3em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.paper { color: #555; font-style: italic; }
.scale { background: #fde8e8; border-left: 6px solid #c44e52; padding: .5em 1em; margin: .6em 0 1em; }
.missing { background: #fff4d6; border-left: 4px solid #e0a800; padding: .4em .8em; margin: .4em 0; }
.notes { color: #444; font-size: .92em; }
table.tbl { border-collapse: collapse; font-size: .86em; margin: .5em 0 1.2em; }
table.tbl th, table.tbl td { border: 1px solid #ddd; padding: .25em .55em; text-align: right; white-space: nowrap; }
table.tbl th { background: #f3f5f8; } table.tbl td:nth-child(-n+3) { text-align: left; }
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


def render_html(title: str, full: FullReport, out_dir: Path) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if full.warnings:
        from .scale import SCALE_HEADLINE

        parts.append(
            f"<div class='scale'><b>{_esc(SCALE_HEADLINE)}:</b><ul>"
            + "".join(f"<li>{_esc(w)}</li>" for w in full.warnings)
            + "</ul></div>"
        )
    parts.append(
        "<table class='tbl summary'>"
        + "".join(f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in full.summary)
        + "</table>"
    )
    if full.coverage:
        parts.append(
            "<p class='notes'><b>Not covered by this sweep:</b> " + "; ".join(map(_esc, full.coverage)) + "</p>"
        )
    if full.messages:
        parts.append(
            "<div class='missing'><b>Missing cells</b><ul>"
            + "".join(f"<li>{_esc(m)}</li>" for m in full.messages)
            + "</ul></div>"
        )
    parts.append(
        "<nav>"
        + "".join(f"<a href='#{r.key}'>{_esc(r.title.split(':')[0])}</a>" for r in full.reports)
        + "<a href='trials.csv'>trials.csv</a><a href='report.md'>report.md</a></nav>"
    )
    for rep in full.reports:
        parts.append(f"<section id='{rep.key}'><h2>{_esc(rep.title)}</h2><p class='paper'>{_esc(rep.paper)}</p>")
        parts += [f"<div class='missing'>{_esc(m)}</div>" for m in rep.messages]
        if rep.notes:
            parts.append("<ul class='notes'>" + "".join(f"<li>{_esc(n)}</li>" for n in rep.notes) + "</ul>")
        parts += [_img(p) for p in rep.figures if p.is_file()]
        for table in rep.tables:
            parts.append(f"<p><b>{_esc(table.caption)}</b></p>")
            parts.append(table.frame.to_html(index=False, border=0, classes="tbl", escape=True, na_rep="–"))
        parts.append(f"<p class='notes'><a href='{_esc(rep.key)}.md'>{_esc(rep.key)}.md</a></p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)
