"""img2dataset against a loopback HTTP server serving demo photos: shards named as the
embed job reads them, failures counted by reason, and the result embedded."""

from __future__ import annotations

import functools
import http.server
import threading
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffrep.data.download import collect_stats
from diffrep.data.reader import iter_raw_samples
from tests.conftest import requires_sscd


@pytest.fixture
def http_server(tmp_path):
    from diffrep.data.demo import load_source_photos

    site = tmp_path / "site"
    site.mkdir()
    photos = load_source_photos(use_opencv_doc=False)
    names = sorted(photos)[:8]
    for name in names:
        photos[name].save(site / f"{name}.jpg", quality=92)
    (site / "not-an-image.jpg").write_bytes(b"<html>nope</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", names, photos
    server.shutdown()


@requires_sscd
def test_img2dataset_shards_download_and_embed(http_server, tmp_path, ray_cluster):
    from jobs import download, embed

    base, names, photos = http_server
    urls = [f"{base}/{n}.jpg" for n in names] + [f"{base}/missing.jpg", f"{base}/not-an-image.jpg"]
    captions = [f"a photo of {n}" for n in names] + ["gone", "broken"]
    pq.write_table(pa.table({"url": urls, "caption": captions}), tmp_path / "laion.parquet")
    shards = tmp_path / "shards"
    assert download.main(["--url_list", str(tmp_path / "laion.parquet"), "--output_folder", str(shards),
                          "--processes_count", "1", "--thread_count", "4",
                          "--number_sample_per_shard", "4", "--image_size", "256",
                          "--timeout", "5", "--retries", "0"]) == 0
    tars = sorted(p.name for p in shards.glob("*.tar"))
    assert tars == ["00000.tar", "00001.tar", "00002.tar"]  # 10 rows, 4 per shard
    totals = collect_stats(str(shards))
    assert totals["count"] == 10 and totals["successes"] == 8
    assert totals["failed_to_download"] + totals["failed_to_resize"] == 2
    samples = {}
    for tar in tars:
        for raw in iter_raw_samples(str(shards / tar), Counter()):
            samples[raw.key] = raw
    # keys: 5 digits of shard, then the row in 1 digit (4 per shard; 4 digits at 10k)
    assert len(samples) == 8 and all(k.isdigit() and len(k) == 6 for k in samples)
    got = {s.members["txt"].decode(): s for s in samples.values()}
    assert set(got) == {f"a photo of {n}" for n in names}

    root = tmp_path / "root"
    assert embed.main(["--input", str(shards / "{00000..00002}.tar"), "--root", str(root),
                       "--models", "[sscd_onnx]", "--batch_size", "4"]) == 0
    meta = pa.concat_tables([pq.read_table(p) for p in sorted((root / "embeddings/sscd_onnx/metadata").glob("*.parquet"))])
    emb = np.concatenate([np.load(p) for p in sorted((root / "embeddings/sscd_onnx/img_emb").glob("*.npy"))])
    assert len(meta) == 8 and len(emb) == 8
    assert set(meta["url"].to_pylist()) == set(urls[:8])
    # each embedding is its own photo's: nearest of the originals by SSCD is the source
    from diffrep.models import create_embedder

    originals = create_embedder("sscd_onnx").embed_images([photos[n] for n in names])
    for row, vec in zip(meta.to_pylist(), emb.astype(np.float32), strict=True):
        assert names[int(np.argmax(originals @ vec))] == row["caption"].removeprefix("a photo of ")
