"""`diffrep serve` on real job outputs: the demo corpus embedded (the distilled SSCD, real weights) and indexed,
deduplicated, scanned (a folder of planted copies) and ranked (DCS of a tiny pipeline),
served by the `diffrep serve` command in its own process. Pages are driven in headless
Chromium (Playwright on Debian's chromium); the clip-retrieval protocol is driven with
clip-retrieval's own ClipClient; bad requests get 4xx and the server keeps serving."""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

from tests.conftest import DEMO_MODEL, requires_sscd
from tests.helpers import job_env, need_chromium

pytestmark = [pytest.mark.slow, requires_sscd]
DIFFREP = Path(sys.executable).parent / "diffrep"
TOKEN = "t0ken-for-the-serve-test-0123456789"


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_root(demo_index_root, ray_cluster, tmp_path_factory):
    """A copy of the demo index root with a dedup report, a scan of planted copies and a
    DCS ranking, made by the jobs. Returns (root, corpus dir, planted truth table)."""
    from diffrep.diffusion.tiny import build_tiny_pipeline
    from diffrep.scan.demo import build_planted_generations
    from jobs import dcs, dedup, scan

    src, corpus, _ = demo_index_root
    base = tmp_path_factory.mktemp("serve")
    root = base / "root"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("scans", "rankings", "dedup", "search"))
    truth = build_planted_generations(str(corpus), str(base / "generated"), copies=4, novel=2, seed=3)
    address = ["--ray_address", ray_cluster.address, "--model", DEMO_MODEL]
    assert dedup.main(["--root", str(root), "--threshold", "0.9", *address]) == 0
    assert scan.main(["--root", str(root), "--run", "planted", "--generated", str(base / "generated"),
                      "--generated_name", "closed-model", "--regions", "false", "--baseline_size", "6",
                      "--shard_actor_cpus", "0.5", *address]) == 0
    build_tiny_pipeline(base / "tiny", seed=0, resolution=32)
    assert dcs.main(["--root", str(root), "--run", "tiny-dcs", "--checkpoint", str(base / "tiny"),
                     "--resolution", "32", "--batch_size", "8", "--captions_per_shard", "20",
                     "--num_buckets", "1", "--top_n", "4", "--ecs_seeds", "1", "--gt_seeds", "1",
                     "--gt_steps", "2", *address]) == 0
    return root, corpus, truth


@pytest.fixture(scope="module")
def server(served_root, tmp_path_factory):
    """`diffrep serve` over the root, in its own process (no Ray: shards memory-mapped);
    yields its base URL."""
    root = served_root[0]
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(DIFFREP), "serve", "--root", str(root), "--port", str(port)],
                                env=job_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/indices-list", timeout=5).ok:
                break
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def browser():
    need_chromium()
    from playwright.sync_api import sync_playwright

    from tests.helpers import chromium

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield b
        b.close()


def images_loaded(page, selector: str, timeout_ms: int = 60_000) -> int:
    """Wait until every <img> under `selector` has loaded (thumbnails are made on first
    request, slower on a loaded machine); returns their count. A broken image (complete,
    no pixels) never passes: the wait times out and the test fails."""
    page.wait_for_function(
        "sel => { const im = [...document.querySelectorAll(sel + ' img')];"
        " return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector, timeout=timeout_ms)
    return page.locator(f"{selector} img").count()


def submit(page, selector: str, timeout_ms: int = 60_000) -> None:
    """Click what navigates (a form's submit, a link) and wait until the new page has
    loaded: a bare click returns as soon as it is dispatched, so on a loaded machine the
    next locator would read the old page (a search embeds its upload first)."""
    with page.expect_navigation(timeout=timeout_ms):
        page.locator(selector).first.click()


def corpus_photo(corpus: Path, key: str) -> bytes:
    from collections import Counter

    from diffrep.data.reader import iter_raw_samples

    for tar in sorted((corpus / "shards").glob("*.tar")):
        for raw in iter_raw_samples(str(tar), Counter()):
            if raw.key == key:
                return raw.members["jpg"]
    raise KeyError(key)


def test_search_by_upload_and_by_key_in_the_browser(server, served_root, browser, tmp_path):
    root, corpus, truth = served_root
    planted = [t for t in truth.to_pylist() if t["planted"]][0]
    query = tmp_path / "query.png"
    Image.open(io.BytesIO(corpus_photo(corpus, planted["source_key"]))).convert("RGB").save(query)
    page = browser.new_page()
    page.goto(f"{server}/search")
    page.set_input_files("input[name=image]", str(query))
    page.fill("input[name=k]", "5")
    submit(page, "button[type=submit]")
    rows = page.locator("#results tr.hit")
    assert rows.count() == 5
    first = rows.nth(0).locator("td").all_inner_texts()
    # the photo itself is in the corpus: it comes first, with similarity ~1
    assert first[3] == planted["source_key"] and float(first[2]) > 0.99
    assert images_loaded(page, "#results") > 0
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

    # verified geometrically: the photo itself is, photos of other things are not
    page.goto(f"{server}/search")
    page.set_input_files("input[name=image]", str(query))
    page.fill("input[name=k]", "5")
    page.check("input[name=verify]")
    submit(page, "button[type=submit]")
    geometry = page.locator("#results td.geometry").all_inner_texts()
    assert geometry[0].startswith("verified (") and "scale 1.00" in geometry[0], geometry
    assert geometry[-1].startswith("not verified"), geometry
    assert "mirrored" not in geometry[0], geometry

    # the photo flipped: still found first (the descriptor ignores flips), and geometry
    # says the copy is mirrored
    flipped = tmp_path / "flipped.png"
    Image.open(query).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    page.goto(f"{server}/search")
    page.set_input_files("input[name=image]", str(flipped))
    page.fill("input[name=k]", "5")
    page.check("input[name=verify]")
    submit(page, "button[type=submit]")
    assert planted["source_key"] in page.locator("#results tr.hit").nth(0).locator("td").all_inner_texts()
    geometry = page.locator("#results td.geometry").all_inner_texts()
    assert geometry[0].startswith("verified (") and geometry[0].endswith(", mirrored)"), geometry

    page.goto(f"{server}/search")
    page.fill("input[name=key]", planted["source_key"])
    submit(page, "button[type=submit]")
    assert page.locator("#results tr.hit").nth(0).locator("td").nth(3).inner_text() == planted["source_key"]
    page.close()


def test_scan_filters_and_a_verdict_kept_after_reload(server, served_root, browser, tmp_path):
    root, _, truth = served_root
    gens = pq.read_table(next((root / "scans/planted/generations/closed-model").glob("*.parquet")))
    page = browser.new_page()
    page.goto(f"{server}/scans/planted")
    shown = [float(t) for t in page.locator("#generations td.top1").all_inner_texts()]
    assert len(shown) == gens.num_rows and shown == sorted(shown, reverse=True)
    page.fill("input[name=min_score]", "0.5")
    submit(page, "#filters button")
    above = sorted((s for s in gens["top1_sim"].to_pylist() if s >= 0.5), reverse=True)
    shown = [float(t) for t in page.locator("#generations td.top1").all_inner_texts()]
    assert len(shown) == len(above) and np.allclose(shown, above, atol=1e-3) and "min_score=0.5" in page.url
    assert images_loaded(page, "#generations") > 0
    row = page.locator("#generations tr.gen").nth(0)
    row.locator("input[name=reviewer]").fill("ada")
    row.locator("select[name=verdict]").select_option("exact_copy")
    row.locator("input[name=note]").fill("same photo, recoloured")
    with page.expect_navigation():  # the form posts and is redirected back: reload after
        row.locator("form.v button").click()
    page.reload()
    verdict = page.locator("#generations tr.gen").nth(0).locator(".verdict")
    assert verdict.inner_text().startswith("exact copy") and "ada: same photo, recoloured" in verdict.inner_text()
    page.screenshot(path=str(tmp_path / "scan.png"), full_page=True)
    export = pq.read_table(root / "reviews" / "verdicts.parquet").to_pylist()
    assert [(r["verdict"], r["reviewer"]) for r in export] == [("exact_copy", "ada")]
    assert export[0]["item"].startswith("scan/planted/")
    page.close()


def test_a_duplicate_group_and_a_ranking(server, served_root, browser):
    root = served_root[0]
    stats = pq.read_table(root / "dedup" / DEMO_MODEL / "group_stats")  # every partition's part
    page = browser.new_page()
    page.goto(f"{server}/dedup/{DEMO_MODEL}")
    sizes = [int(t) for t in page.locator("#groups tr.group td:nth-child(2)").all_inner_texts()]
    assert sizes == sorted(stats["size"].to_pylist(), reverse=True)[:len(sizes)] and sizes
    submit(page, "#groups tr.group a")
    members = page.locator("#members tr.member")
    assert members.count() == sizes[0]
    assert page.locator("#pairs tr.pair").count() >= 1
    ranked = pq.read_table(root / "rankings/tiny-dcs/ranked.parquet")
    page.goto(f"{server}/rankings/tiny-dcs")
    captions = page.locator("#ranking tr.caption td:nth-child(2)").all_inner_texts()
    assert captions == ranked["caption"].to_pylist()[:len(captions)] and captions
    labels = page.locator("#ranking tr.caption td.label").all_inner_texts()
    assert all(lab in ("MV", "RV", "TV", "none", "untested") for lab in labels[:4])
    assert page.locator("svg").count() == 1  # the precision curve
    assert "verdicts where given" not in page.locator("svg").inner_html()
    row = page.locator("#ranking tr.caption").nth(0)  # a reviewer overrules the first label
    row.locator("input[name=reviewer]").fill("grace")
    row.locator("select[name=verdict]").select_option("not_a_copy")
    with page.expect_navigation():
        row.locator("form.v button").click()
    assert page.url.endswith("/rankings/tiny-dcs")  # back where the verdict was given
    assert page.locator("#ranking tr.caption").nth(0).locator(".verdict").inner_text().startswith("not a copy")
    assert "verdicts where given, else ground truth" in page.locator("svg").inner_html()
    page.close()


def clip_client_class():
    """clip-retrieval's ClipClient, from the installed package's clip_client.py as it is:
    the package's __init__ imports its whole back end (flask, torch models), which `make
    setup` does not install (--no-deps); the client needs only requests."""
    import importlib.util

    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None:
        from tests.conftest import missing

        missing("clip-retrieval is not installed (make setup installs it)")
    path = Path(spec.submodule_search_locations[0]) / "clip_client.py"
    module_spec = importlib.util.spec_from_file_location("clip_retrieval_client", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ClipClient


def test_clip_retrieval_client_against_diffrep(server, served_root, tmp_path):
    ClipClient = clip_client_class()

    root, corpus, truth = served_root
    planted = [t for t in truth.to_pylist() if t["planted"]][0]
    query = tmp_path / "query.jpg"
    query.write_bytes(corpus_photo(corpus, planted["source_key"]))
    assert requests.get(f"{server}/indices-list").json() == [DEMO_MODEL]
    client = ClipClient(url=f"{server}/knn-service", indice_name=DEMO_MODEL, num_images=5,
                        deduplicate=False, use_safety_model=False, use_violence_detector=False)
    results = client.query(image=str(query))
    assert len(results) == 5 and results[0]["caption"] and results[0]["similarity"] > 0.99
    assert {"id", "similarity", "url", "caption"} <= set(results[0])
    sims = [r["similarity"] for r in results]
    assert sims == sorted(sims, reverse=True)
    # an embedding query gives the same neighbours
    from diffrep.search import open_index

    vec = open_index(str(root), DEMO_MODEL).vectors(np.array([results[0]["id"]]))[0]
    by_vec = client.query(embedding_input=vec.tolist())
    assert by_vec[0]["id"] == results[0]["id"]
    # deduplicate drops results within 0.94 of a better one: never more, here fewer or equal
    deduped = ClipClient(url=f"{server}/knn-service", indice_name=DEMO_MODEL, num_images=5,
                         deduplicate=True).query(image=str(query))
    assert len(deduped) <= len(results) and deduped[0]["id"] == results[0]["id"]
    meta = requests.post(f"{server}/metadata", json={"ids": [results[0]["id"]], "indice_name": DEMO_MODEL}).json()
    assert meta == [{"id": results[0]["id"], "metadata": {"key": meta[0]["metadata"]["key"],
                                                          "url": results[0]["url"],
                                                          "caption": results[0]["caption"]}}]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, served_root):
    root = served_root[0]
    png = io.BytesIO()
    Image.new("1", (10000, 6000)).save(png, "PNG")  # 60 MP in 10 kB: a decompression bomb
    cases = [
        ("post", "/knn-service", {"data": b"{not json"}, 400),
        ("post", "/knn-service", {"json": {"indice_name": "nope", "image": "AAAA"}}, 404),
        ("post", "/knn-service", {"json": {"indice_name": DEMO_MODEL, "text": "a cat"}}, 400),
        ("post", "/knn-service", {"json": {"indice_name": DEMO_MODEL, "image": "not base64!"}}, 400),
        ("post", "/knn-service", {"json": {"indice_name": DEMO_MODEL,
                                           "image": base64.b64encode(b"plain text").decode()}}, 400),
        ("post", "/knn-service", {"json": {"indice_name": DEMO_MODEL,
                                           "image": base64.b64encode(png.getvalue()).decode()}}, 400),
        ("post", "/knn-service", {"json": {"indice_name": DEMO_MODEL, "embedding_input": [1, 2]}}, 400),
        ("post", "/knn-service", {"data": b"x" * (16 * 2**20)}, 413),
        ("post", "/search", {"files": {"image": ("big.jpg", b"\xff" * (11 * 2**20))}}, 413),
        ("post", "/search", {"data": {"key": "no-such-key"}}, 404),
        ("get", "/scans/planted?page=0", {}, 400),
        ("get", "/scans/planted?page=abc", {}, 400),
        ("get", "/scans/planted?sort=1;drop", {}, 400),
        ("get", "/scans/../../etc", {}, 404),
        ("get", "/thumb/member?tar=/etc/passwd&member=x", {}, 403),
        ("get", "/thumb/member?tar=../../../../etc/passwd&member=x", {}, 403),
        ("get", f"/thumb/train/{DEMO_MODEL}/999999", {}, 404),
        ("get", f"/thumb/train/{DEMO_MODEL}/0?box=0,0,2,1", {}, 400),
        ("post", "/review", {"data": {"item": "scan/x", "verdict": "maybe", "reviewer": "ada"}}, 400),
        ("post", "/review", {"data": {"item": "scan/x", "verdict": "exact_copy", "reviewer": ""}}, 400),
        ("post", "/review", {"data": {"item": "scan/x", "verdict": "exact_copy", "reviewer": "eve"},
                             "headers": {"Origin": "https://evil.example"}}, 403),
    ]
    for method, path, kwargs, status in cases:
        r = getattr(requests, method)(f"{server}{path}", timeout=60, **kwargs)
        assert r.status_code == status, (path, r.status_code, r.text[:300])
    assert requests.get(f"{server}/indices-list", timeout=10).json() == [DEMO_MODEL]
    assert not (root / "reviews" / "verdicts.parquet").exists() or all(
        r["item"] != "scan/x" for r in pq.read_table(root / "reviews" / "verdicts.parquet").to_pylist())


def test_token_required_when_bound_beyond_loopback(served_root, tmp_path):
    from diffrep.jobs import serve

    root = served_root[0]
    assert serve.main(["--root", str(root), "--host", "0.0.0.0"]) == 2  # no token: refused
    from starlette.testclient import TestClient

    from diffrep.serve.app import create_app
    from diffrep.serve.config import ServeConfig

    client = TestClient(create_app(ServeConfig(root=str(root), token=TOKEN)))
    assert client.get("/indices-list").status_code == 401
    assert client.get("/indices-list", headers={"Authorization": f"Bearer {TOKEN}"}).json() == [DEMO_MODEL]
    assert client.get("/indices-list", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    first = client.get(f"/scans?token={TOKEN}&x=1", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/scans?x=1"
    assert client.get("/scans").status_code == 200  # the cookie carries it now


def test_the_same_app_as_a_ray_serve_application(served_root, ray_cluster, tmp_path):
    """`diffrep serve --ray_serve true` on the session's cluster: the app answers through
    Ray Serve's proxy, and SIGTERM stops the job and deletes the application."""
    import signal

    root = served_root[0]
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(DIFFREP), "serve", "--root", str(root), "--ray_serve", "true",
                                 "--ray_address", ray_cluster.address, "--port", str(port),
                                 "--replica_cpus", "0.5"], env=job_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            # The proxy accepts connections before the replica has opened the root; on a
            # loaded machine the first answer can take longer than one read timeout.
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                r = requests.get(f"http://127.0.0.1:{port}/indices-list", timeout=30)
                if r.ok:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert r.json() == [DEMO_MODEL]
        page = requests.get(f"http://127.0.0.1:{port}/scans/planted", timeout=30)
        assert page.status_code == 200 and "id='generations'" in page.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, log.read_text()[-3000:]
    from ray import serve

    assert "diffrep" not in serve.status().applications
