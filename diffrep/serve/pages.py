"""The app's HTML: server-rendered pages (no script needed), every value escaped. Images
are <img> links to the app's thumbnail routes; charts are the reports' inline SVG."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from diffrep.report.html import esc, fmt
from diffrep.serve.reviews import VERDICTS
from diffrep.serve.tables import Page

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
nav{background:#243447;padding:8px 24px}nav a{color:#fff;margin-right:18px;text-decoration:none}
main{margin:16px 24px;max-width:1400px}h1{font-size:20px}h2{font-size:17px;margin-top:24px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top}
img.t{width:96px;height:96px;object-fit:contain;background:#eee;border:1px solid #ccc;display:block}
td.imgs{white-space:nowrap}td.imgs img.t,td.imgs .m{display:inline-block;vertical-align:top;margin-right:4px}
td.imgs .m img.t{display:block}
img.q{max-width:240px;max-height:240px}
.m{display:inline-block;margin:0 6px 4px 0;font-size:11px;width:100px;word-break:break-all}
form.f{background:#f4f6f8;padding:8px;margin:8px 0}form.f label{margin-right:10px}
form.v{font-size:12px;margin-top:4px}.verdict{font-weight:bold;color:#8a2b06}
.note{color:#666;font-size:13px}.err{color:#a00}.pager a{margin:0 4px}
"""


def layout(title: str, body: str) -> str:
    nav = "".join(f"<a href='{href}'>{name}</a>" for href, name in
                  [("/", "diffrep"), ("/search", "Search"), ("/scans", "Scans"), ("/dedup", "Duplicates"),
                   ("/rankings", "Rankings"), ("/reviews", "Reviews")])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><nav>{nav}</nav><main><h1>{esc(title)}</h1>"
            f"{body}</main></body></html>")


def error_page(status: int, message: str) -> str:
    return layout(f"{status}", f"<p class='err' id='error'>{esc(message)}</p>")


def train_img(index: str, image_id: int | None, box: Sequence[float] | None = None, size: int = 160) -> str:
    if image_id is None or image_id < 0:
        return "<span class='note'>none</span>"
    q = {"size": size}
    if box:
        q["box"] = ",".join(f"{v:.4f}" for v in box)
    return f"<img class='t' loading='lazy' src='/thumb/train/{esc(index)}/{int(image_id)}?{esc(urlencode(q))}'>"


def member_img(tar: str, member: str, box: Sequence[float] | None = None, size: int = 160) -> str:
    q = {"tar": tar, "member": member, "size": size}
    if box:
        q["box"] = ",".join(f"{v:.4f}" for v in box)
    return f"<img class='t' loading='lazy' src='/thumb/member?{esc(urlencode(q))}'>"


def verdict_form(item: str, current: dict | None, next_url: str, reviewer: str) -> str:
    shown = ""
    if current:
        shown = (f"<div class='verdict' data-item='{esc(item)}'>{esc(VERDICTS[current['verdict']])} "
                 f"<span class='note'>({esc(current['reviewer'])}{': ' + esc(current['note']) if current['note'] else ''})"
                 f"</span></div>")
    options = "<option value='' selected disabled>verdict…</option>" + "".join(
        f"<option value='{v}'>{esc(name)}</option>" for v, name in VERDICTS.items())
    return (f"{shown}<form class='v' method='post' action='/review'>"
            f"<input type='hidden' name='item' value='{esc(item)}'>"
            f"<input type='hidden' name='next' value='{esc(next_url)}'>"
            f"<input name='reviewer' placeholder='your name' size='8' value='{esc(reviewer)}' required>"
            f"<select name='verdict' required>{options}</select> <input name='note' placeholder='note' size='10'>"
            f"<button type='submit'>save</button></form>")


def pager(page: Page, base: str, params: dict) -> str:
    def href(n: int) -> str:
        return f"{base}?{urlencode({**{k: v for k, v in params.items() if v not in (None, '')}, 'page': n})}"

    links = []
    if page.page > 1:
        links.append(f"<a id='prev' href='{esc(href(page.page - 1))}'>&larr; previous</a>")
    links.append(f"page {page.page} of {page.pages} ({page.total} rows)")
    if page.page < page.pages:
        links.append(f"<a id='next' href='{esc(href(page.page + 1))}'>next &rarr;</a>")
    return f"<p class='pager'>{' '.join(links)}</p>"


def matches_cell(index: str, ids, keys, sims, limit: int = 3) -> str:
    out = []
    for id_, key, sim in list(zip(ids or [], keys or [], sims or [], strict=False))[:limit]:
        out.append(f"<span class='m'>{train_img(index, id_)}{esc(key)}<br>{fmt(sim)}</span>")
    return "".join(out)


def select(name: str, options: Sequence[str], current: str | None, blank: str | None = None) -> str:
    opts = [f"<option value=''>{esc(blank)}</option>"] if blank is not None else []
    opts += [f"<option value='{esc(o)}'{' selected' if o == current else ''}>{esc(o)}</option>" for o in options]
    return f"<select name='{name}'>{''.join(opts)}</select>"
