"""The app's pages: search, scans, duplicate groups, rankings and reviews. Each handler
reads one page of rows (diffrep.serve.tables) and renders it (diffrep.serve.pages)."""

from __future__ import annotations

import base64
import io
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from diffrep.report.html import esc, fmt, svg_bars, svg_lines
from diffrep.serve.catalog import Forbidden
from diffrep.serve.pages import (
    error_page,
    layout,
    matches_cell,
    member_img,
    pager,
    select,
    train_img,
    verdict_form,
)
from diffrep.serve.reviews import COPY_VERDICTS, VERDICTS, item_id
from diffrep.serve.state import ServeState, check_length, float_param, int_param, read_upload

TRUTH_POSITIVE = {"MV", "RV", "TV"}


def _reviewer(request: Request) -> str:
    return request.cookies.get("diffrep_reviewer", "")


def _next(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def home(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    c = st.catalog
    items = [f"<li>indexes: {esc(', '.join(c.indexes().values()) or 'none')}</li>",
             f"<li><a href='/scans'>scans</a>: {esc(', '.join(c.scans()) or 'none')}</li>",
             f"<li><a href='/dedup'>duplicate reports</a>: {esc(', '.join(c.dedups()) or 'none')}</li>",
             f"<li><a href='/rankings'>rankings</a>: {esc(', '.join(c.rankings()) or 'none')}</li>"]
    return HTMLResponse(layout(f"diffrep: {c.root}", f"<ul>{''.join(items)}</ul>"))


# -- search --------------------------------------------------------------------------------

def _search_form(st: ServeState, index: str | None, key: str = "", k: int = 20, regions: bool = False,
                 verify: bool = False) -> str:
    return (f"<form class='f' id='search' method='post' action='/search' enctype='multipart/form-data'>"
            f"<label>image <input type='file' name='image' accept='image/*'></label>"
            f"<label>or corpus key <input name='key' value='{esc(key)}' size='14'></label>"
            f"<label>index {select('index', list(st.searches), index)}</label>"
            f"<label>k <input name='k' type='number' min='1' max='200' value='{k}' size='4'></label>"
            f"<label><input type='checkbox' name='regions' value='1'{' checked' if regions else ''}> "
            f"object-level (regions)</label><label><input type='checkbox' name='verify' value='1'"
            f"{' checked' if verify else ''}> verify geometrically (top 10)</label>"
            f"<button type='submit'>search</button></form>")


async def search(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    if not st.searches:
        return HTMLResponse(error_page(404, "this root has no committed index to search"), 404)
    default = next(iter(st.searches))
    if request.method == "GET":
        return HTMLResponse(layout("Search the training set", _search_form(st, default)))
    check_length(request, st.config.max_upload_bytes + 65536)
    form = await request.form(max_files=1, max_fields=10, max_part_size=st.config.max_upload_bytes)
    index = str(form.get("index") or default)
    search_ = st.index(index)
    k, key = int_param(form.get("k"), "k", 20), str(form.get("key") or "").strip()
    regions, verify = form.get("regions") == "1", form.get("verify") == "1"
    upload = form.get("image")
    query_html = ""
    checks: list = []
    if upload is not None and getattr(upload, "filename", ""):
        image = read_upload(await upload.read(), st.config)
        matches = await st.run(search_.by_image, image, k, regions)
        if verify:
            checks = await st.run(search_.verify, image, matches)
        buf = io.BytesIO()
        shown = image.copy()
        shown.thumbnail((240, 240))
        shown.save(buf, "JPEG", quality=85)
        query_html = (f"<p>query: {esc(upload.filename)}</p><img class='q' alt='query' "
                      f"src='data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}'>")
    elif key:
        matches = await st.run(search_.by_key, key, k)
        query_html = f"<p>query: corpus key {esc(key)}</p>"
    else:
        raise ValueError("send an image or a corpus key")
    rows = "".join(
        f"<tr class='hit'><td>{i + 1}</td><td>{train_img(index, m.id, m.box)}</td><td>{fmt(m.similarity)}</td>"
        + (f"<td>{fmt(m.global_similarity)}</td>" if regions else "")
        + (f"<td class='geometry'>{_geometry(checks[i])}</td>" if checks else "")
        + f"<td>{esc(m.key)}</td><td>{esc(m.caption)}</td><td>{esc(m.url)}</td></tr>"
        for i, m in enumerate(matches))
    score = "region score (box drawn)</th><th>whole-image similarity" if regions else "similarity"
    if checks:
        score += "</th><th>geometry (inliers, scale)"
    body = (_search_form(st, index, key, k, regions, verify) + query_html +
            f"<table id='results'><tr><th>#</th><th>training image</th><th>{score}</th>"
            f"<th>key</th><th>caption</th><th>url</th></tr>{rows}</table>")
    return HTMLResponse(layout(f"Top {len(matches)} in {index}", body))


def _geometry(check) -> str:
    """A verification's cell: verified or not, its inliers, the scale of the copy and
    whether it is mirrored."""
    if check is None:
        return ""
    mark = "verified" if check.verified else "not verified"
    scale = f", scale {check.scale:.2f}" if check.scale else ""
    mirrored = ", mirrored" if check.verified and check.mirrored else ""
    return f"{mark} ({check.inliers} inliers{scale}{mirrored})"


# -- scans ---------------------------------------------------------------------------------

def scans(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    parts = []
    for run, labels in st.catalog.scans().items():
        summary = st.tables.scan_summary(run)
        rates = {lab: summary.get("checkpoints", {}).get(lab, {}).get("top1", {}).get("share_above_threshold")
                 for lab in labels}
        chart = ""
        if all(v is not None for v in rates.values()):
            chart = svg_bars(labels, {"share above threshold": [rates[lab] for lab in labels]},
                             f"{run}: replication rate (top-1 > {summary.get('threshold', 0.5)})",
                             "checkpoint", "share of generations", width=520, height=220)
        links = " ".join(f"<a href='/scans/{esc(run)}?checkpoint={esc(lab)}'>{esc(lab)}</a>" for lab in labels)
        parts.append(f"<h2><a href='/scans/{esc(run)}'>{esc(run)}</a></h2><p>{links}</p>{chart}")
    return HTMLResponse(layout("Scans", "".join(parts) or "<p>no scans under this root</p>"))


def scan_run(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    run, q = request.path_params["run"], request.query_params
    labels = st.catalog.scans().get(run, [])
    params = {"checkpoint": q.get("checkpoint") or None, "prompt": q.get("prompt") or None,
              "seed": int_param(q.get("seed"), "seed", None),
              "min_score": float_param(q.get("min_score"), "min_score"),
              "max_score": float_param(q.get("max_score"), "max_score"),
              "sort": q.get("sort") or "top1_sim"}
    page = st.tables.generations(run, **params, page=int_param(q.get("page"), "page", 1),
                                 page_size=int_param(q.get("page_size"), "page_size", st.config.page_size))
    index = st.default_index
    items = [item_id("scan", run, r["gen_id"], r["top1_key"]) for r in page.rows]
    verdicts = st.reviews.latest(items)
    rows = []
    for r, item in zip(page.rows, items, strict=True):
        tar = st.catalog.relative(r["image_tar"])
        seed = "" if r["seed"] is None else f"seed {r['seed']} · "
        region = ""
        if r.get("region_sim") is not None:
            region = (f"{member_img(tar, r['image_member'], r['region_box'])}"
                      f"{train_img(index, r['region_id'])}<br>region {fmt(r['region_sim'])}")
        rows.append(
            f"<tr class='gen'><td>{esc(r['label'])}</td><td>{member_img(tar, r['image_member'])}</td>"
            f"<td>{esc(r['prompt'])}<br><span class='note'>{seed}{esc(r['gen_id'])}</span></td>"
            f"<td class='top1'>{fmt(r['top1_sim'])}</td>"
            f"<td class='imgs'>{matches_cell(index, r['match_ids'], r['match_keys'], r['match_sims'])}</td>"
            f"<td class='imgs'>{region}</td>"
            f"<td>{verdict_form(item, verdicts.get(item), _next(request), _reviewer(request))}</td></tr>")
    form = (f"<form class='f' id='filters' method='get'><label>checkpoint "
            f"{select('checkpoint', labels, params['checkpoint'], 'all')}</label>"
            f"<label>prompt contains <input name='prompt' value='{esc(params['prompt'] or '')}'></label>"
            f"<label>seed <input name='seed' size='4' value='{esc(q.get('seed', ''))}'></label>"
            f"<label>score from <input name='min_score' size='5' value='{esc(q.get('min_score', ''))}'></label>"
            f"<label>to <input name='max_score' size='5' value='{esc(q.get('max_score', ''))}'></label>"
            f"<label>sort by {select('sort', ['top1_sim', 'region_sim', 'source_sim'], params['sort'])}</label>"
            f"<button type='submit'>filter</button></form>")
    table = ("<table id='generations'><tr><th>checkpoint</th><th>generation</th><th>prompt</th><th>top-1</th>"
             f"<th>top matches</th><th>region match (box)</th><th>verdict (top-1 pair)</th></tr>{''.join(rows)}</table>")
    nav = pager(page, f"/scans/{run}", {**params, "seed": q.get("seed")})
    return HTMLResponse(layout(f"Scan {run}", form + nav + table + nav))


# -- duplicates ----------------------------------------------------------------------------

def dedup(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    links = "".join(f"<li><a href='/dedup/{esc(m)}'>{esc(m)}</a></li>" for m in st.catalog.dedups())
    return HTMLResponse(layout("Duplicate reports", f"<ul>{links}</ul>" if links else "<p>none</p>"))


def dedup_groups(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    model, q = request.path_params["model"], request.query_params
    page = st.tables.groups(model, int_param(q.get("min_size"), "min_size", 2),
                            int_param(q.get("page"), "page", 1), st.config.page_size)
    summary = st.tables.dedup_summary(model)
    index = st.index_for(model)
    previews = st.tables.group_previews(model, [r["group_id"] for r in page.rows], 6)
    rows = "".join(
        f"<tr class='group'><td><a href='/dedup/{esc(model)}/group/{r['group_id']}'>group {r['group_id']}</a></td>"
        f"<td>{r['size']}</td><td>{r['distinct_captions']}</td>"
        f"<td class='imgs'>{''.join(train_img(index, m['id'], size=96) for m in previews.get(r['group_id'], []))}</td></tr>"
        for r in page.rows)
    counts = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    body = (f"<p class='note'>{esc(', '.join(f'{k}: {v}' for k, v in counts.items()))}</p>"
            + pager(page, f"/dedup/{model}", {"min_size": q.get("min_size")})
            + f"<table id='groups'><tr><th>group</th><th>images</th><th>distinct captions</th>"
              f"<th>members</th></tr>{rows}</table>")
    return HTMLResponse(layout(f"Duplicate groups of {model}", body))


def dedup_group(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    model, gid = request.path_params["model"], int(request.path_params["group_id"])
    q = request.query_params
    members = st.tables.group_members(model, gid, int_param(q.get("page"), "page", 1), st.config.page_size)
    pairs = st.tables.group_pairs(model, gid, 1, st.config.page_size)
    index = st.index_for(model)
    items = [item_id("dedup", model, p["key_a"], p["key_b"]) for p in pairs.rows]
    verdicts = st.reviews.latest(items)
    member_rows = "".join(
        f"<tr class='member'><td>{train_img(index, m['id'])}</td><td>{esc(m['key'])}"
        f"{' (representative)' if m['is_representative'] else ''}</td><td>{esc(m['caption'])}</td>"
        f"<td>{esc(m['url'])}</td></tr>" for m in members.rows)
    pair_rows = "".join(
        f"<tr class='pair'><td class='imgs'>{train_img(index, p['id_a'])}{train_img(index, p['id_b'])}</td>"
        f"<td>{fmt(p['similarity'])}</td><td>{verdict_form(item, verdicts.get(item), _next(request), _reviewer(request))}</td></tr>"
        for p, item in zip(pairs.rows, items, strict=True))
    body = (pager(members, f"/dedup/{model}/group/{gid}", {}) +
            f"<table id='members'><tr><th>image</th><th>key</th><th>caption</th><th>url</th></tr>{member_rows}</table>"
            f"<h2>Pairs above the threshold ({pairs.total}; the {len(pairs.rows)} most similar)</h2>"
            f"<table id='pairs'><tr><th>images</th><th>similarity</th><th>verdict</th></tr>{pair_rows}</table>")
    return HTMLResponse(layout(f"Group {gid} of {model} ({members.total} images)", body))


# -- rankings ------------------------------------------------------------------------------

def rankings(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    links = "".join(f"<li><a href='/rankings/{esc(r)}'>{esc(r)}</a></li>" for r in st.catalog.rankings())
    return HTMLResponse(layout("Caption rankings", f"<ul>{links}</ul>" if links else "<p>none</p>"))


def precision_with_reviews(st: ServeState, run: str, n: int) -> tuple[list[int], list[float]] | None:
    """Precision vs number found over the top `n` captions, a caption's label being its
    latest verdict where a reviewer gave one, else its ground-truth label; captions
    with neither are left out (not tested). None when no verdict is on those captions."""
    page = st.tables.ranking(run, page=1, page_size=min(n, 500))
    items = [item_id("caption", run, r["caption_id"]) for r in page.rows]
    verdicts = st.reviews.latest(items)
    if not verdicts:
        return None
    found, precision, hits, tested = [], [], 0, 0
    for r, item in zip(page.rows, items, strict=True):
        if item in verdicts:
            positive = verdicts[item]["verdict"] in COPY_VERDICTS
        elif r.get("label") in TRUTH_POSITIVE | {"none"}:
            positive = r["label"] in TRUTH_POSITIVE
        else:
            continue
        tested += 1
        hits += positive
        found.append(hits)
        precision.append(hits / tested)
    return found, precision


def ranking_run(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    run, q = request.path_params["run"], request.query_params
    label, caption = q.get("label") or None, q.get("caption") or None
    page = st.tables.ranking(run, label, caption, int_param(q.get("page"), "page", 1), st.config.page_size)
    summary = st.tables.ranking_summary(run)
    index = st.default_index
    items = [item_id("caption", run, r["caption_id"]) for r in page.rows]
    verdicts = st.reviews.latest(items)
    rows = []
    for r, item in zip(page.rows, items, strict=True):
        gens = ""
        if r.get("generations") and r.get("image_tar"):
            tar = st.catalog.relative(r["image_tar"])
            gens = "".join(member_img(tar, g, size=96) for g in r["generations"][:4])
        neighbour = st.key_image(index, r.get("top_neighbour_key")) if r.get("top_neighbour_key") else ""
        rows.append(
            f"<tr class='caption'><td>{r['rank']}</td><td>{esc(r['caption'])}</td><td>{fmt(r['dcs'], 4)}</td>"
            f"<td class='label'>{esc(r.get('label') or '')}</td><td class='imgs'>{gens}</td><td>{neighbour}</td>"
            f"<td>{verdict_form(item, verdicts.get(item), _next(request), _reviewer(request))}</td></tr>")
    curves = {}
    dcs_curve = summary.get("curves", {}).get("dcs")
    if dcs_curve:
        curves["ground truth"] = (dcs_curve["found"], dcs_curve["precision"])
    reviewed = precision_with_reviews(st, run, len(dcs_curve["found"]) if dcs_curve else 100)
    if reviewed and reviewed[0]:
        curves["verdicts where given, else ground truth"] = reviewed
    chart = svg_lines(curves, "precision vs number found (DCS order)", "found", "precision",
                      y_max=1.0) if curves else ""
    labels = sorted(summary.get("labels", {}))
    form = (f"<form class='f' id='filters' method='get'><label>label {select('label', labels, label, 'all')}"
            f"</label><label>caption contains <input name='caption' value='{esc(caption or '')}'></label>"
            f"<button type='submit'>filter</button></form>")
    table = ("<table id='ranking'><tr><th>rank</th><th>caption</th><th>DCS</th><th>label</th>"
             f"<th>generations</th><th>nearest training image</th><th>verdict</th></tr>{''.join(rows)}</table>")
    nav = pager(page, f"/rankings/{run}", {"label": label, "caption": caption})
    return HTMLResponse(layout(f"Ranking {run}", chart + form + nav + table + nav))


# -- reviews -------------------------------------------------------------------------------

async def review(request: Request) -> RedirectResponse:
    st: ServeState = request.app.state.serve
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("a verdict can only be sent from this server's own pages")  # no CSRF
    check_length(request, 65536)
    form = await request.form(max_files=0, max_fields=10)
    reviewer = str(form.get("reviewer") or "")
    await st.run(st.reviews.add, str(form.get("item") or ""), str(form.get("verdict") or ""),
                 reviewer, str(form.get("note") or ""))
    target = str(form.get("next") or "/reviews")
    if not target.startswith("/") or target.startswith("//"):
        target = "/reviews"  # never redirect off this site
    response = RedirectResponse(target, status_code=303)
    response.set_cookie("diffrep_reviewer", reviewer.strip()[:100], samesite="strict", httponly=True)
    return response


def reviews_page(request: Request) -> HTMLResponse:
    st: ServeState = request.app.state.serve
    rows = st.reviews.all_rows()[-500:][::-1]
    table = "".join(f"<tr class='review'><td>{esc(r['item'])}</td><td>{esc(VERDICTS[r['verdict']])}</td>"
                    f"<td>{esc(r['note'])}</td><td>{esc(r['reviewer'])}</td></tr>" for r in rows)
    body = (f"<p>Stored in {esc(st.reviews.path)}; every verdict exported to "
            f"<a href='/reviews.parquet'>{esc(st.reviews.export_path.name)}</a>.</p>"
            f"<table id='reviews'><tr><th>item</th><th>verdict</th><th>note</th><th>reviewer</th></tr>{table}</table>")
    return HTMLResponse(layout(f"Verdicts ({len(rows)} latest)", body))
