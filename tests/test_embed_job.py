"""The embed job on a real local Ray cluster: outputs, traceability, agreement with the
model called directly, resume after a kill, validation before work."""

import hashlib
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from diffrep.data.images import decode_image
from diffrep.models import create_embedder, model_dir_name
from jobs import embed
from tests.helpers import kill_and_resume, photo, sample_members, write_tar

TWO_MODELS = ["--models", "[clip:ViT-B-32, timm:resnet18]",
              "--weights", "{clip:ViT-B-32: random, timm:resnet18: random}"]


def shards_of(corpus: Path) -> str:
    return str(corpus / "shards" / "{00000..00003}.tar")


def read_outputs(root: Path, model: str):
    base = root / "embeddings" / model
    shards = sorted(p.stem for p in (base / "stats").glob("*.json"))
    vectors = {s: np.load(base / "img_emb" / f"{s}.npy") for s in shards}
    meta = {s: pq.read_table(base / "metadata" / f"{s}.parquet").to_pylist() for s in shards}
    stats = {s: json.loads((base / "stats" / f"{s}.json").read_text()) for s in shards}
    return vectors, meta, stats


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def two_model_run(ray_cluster, demo_corpus, tmp_path_factory):
    corpus, manifest = demo_corpus
    root = tmp_path_factory.mktemp("embed")
    rc = embed.main(["--input", shards_of(corpus), "--root", str(root), *TWO_MODELS,
                     "--batch_size", "8", "--progress_interval_s", "1"])
    assert rc == 0
    return corpus, manifest, root


def test_two_models_one_pass_rows_and_skips(two_model_run):
    corpus, manifest, root = two_model_run
    for model, dim in (("clip-ViT-B-32", 512), ("timm-resnet18", 512)):
        vectors, meta, stats = read_outputs(root, model)
        assert sorted(vectors) == ["00000", "00001", "00002", "00003"]
        total_rows = sum(len(v) for v in vectors.values())
        assert total_rows == manifest["num_good_samples"]
        skipped = {}
        for s in stats.values():
            assert s["rows"] == s["samples_read"] - sum(s["skipped"].values())
            assert s["models_in_pass"] == ["clip:ViT-B-32", "timm:resnet18"]
            assert s["model"]["random_init"] is True
            for k, v in s["skipped"].items():
                skipped[k] = skipped.get(k, 0) + v
        assert skipped == manifest["expected_skips"]
        for shard, v in vectors.items():
            assert v.dtype == np.float16 and v.shape == (len(meta[shard]), dim)
            np.testing.assert_allclose(np.linalg.norm(v.astype(np.float32), axis=1), 1, atol=2e-3)


def test_every_metadata_row_traces_to_its_input_sample(two_model_run):
    corpus, _, root = two_model_run
    _, meta_clip, _ = read_outputs(root, "clip-ViT-B-32")
    _, meta_timm, _ = read_outputs(root, "timm-resnet18")
    assert meta_clip == meta_timm  # decoded once, same rows for every model
    for shard, rows in meta_clip.items():
        samples = tar_samples(corpus / "shards" / f"{shard}.tar")
        order = list(samples)
        for r in rows:
            src = samples[r["key"]]
            assert r["shard"] == shard and order[r["row"]] == r["key"]
            assert r["sha256"] == hashlib.sha256(src["jpg"]).hexdigest()
            tar = (corpus / "shards" / f"{shard}.tar").read_bytes()
            assert tar[r["image_offset"]:r["image_offset"] + r["image_size"]] == src["jpg"]
            assert r["caption"] == src["txt"].decode()
            assert r["url"] == json.loads(src["json"])["url"]
            assert (r["width"], r["height"]) == decode_image(src["jpg"]).image.size


def test_corpus_images_are_read_back_by_range_or_by_stream(two_model_run, tmp_path, monkeypatch):
    from diffrep.report import images as fetch

    corpus, _, root = two_model_run
    _, meta, _ = read_outputs(root, "clip-ViT-B-32")
    wanted = {shard: {r["key"] for r in rows[1::3]} for shard, rows in meta.items()}
    samples = {k: v for shard in meta for k, v in tar_samples(corpus / "shards" / f"{shard}.tar").items()}

    def expect_exact(images):
        assert set(images) == set().union(*wanted.values())
        for key, image in images.items():
            assert np.array_equal(np.asarray(image), np.asarray(decode_image(samples[key]["jpg"]).image))

    streamed = []
    real_stream = fetch.read_streamed_images
    monkeypatch.setattr(fetch, "read_streamed_images", lambda url, keys: streamed.append(keys) or real_stream(url, keys))
    expect_exact(fetch.fetch_corpus_images(str(root), "clip:ViT-B-32", wanted))
    assert streamed == []  # every image was one ranged read
    # ranges that no longer hold the embedded bytes (as if the tar changed): streamed instead
    base = root / "embeddings" / "clip-ViT-B-32"
    shifted = tmp_path / "root"
    shutil.copytree(root, shifted)
    for shard in meta:
        path = shifted / "embeddings" / "clip-ViT-B-32" / "metadata" / f"{shard}.parquet"
        table = pq.read_table(base / "metadata" / f"{shard}.parquet")
        offsets = pc.add(table["image_offset"], 512)
        pq.write_table(table.set_column(table.schema.get_field_index("image_offset"), "image_offset", offsets), path)
    expect_exact(fetch.fetch_corpus_images(str(shifted), "clip:ViT-B-32", wanted))
    assert sorted(map(sorted, streamed)) == sorted(map(sorted, (k for k in wanted.values() if k)))


def test_job_embedding_equals_direct_model_call(two_model_run):
    corpus, _, root = two_model_run
    vectors, meta, _ = read_outputs(root, "clip-ViT-B-32")
    samples = tar_samples(corpus / "shards" / "00001.tar")
    model = create_embedder("clip:ViT-B-32", "random", device="cpu")
    images = [decode_image(samples[r["key"]]["jpg"]).image for r in meta["00001"][:6]]
    direct = model.embed_images(images)
    np.testing.assert_allclose(vectors["00001"][:6].astype(np.float32), direct, atol=2e-3)


def test_rerun_skips_complete_shards(two_model_run):
    corpus, _, root = two_model_run
    stats = root / "embeddings" / "clip-ViT-B-32" / "stats" / "00000.json"
    before = stats.stat().st_mtime_ns
    assert embed.main(["--input", shards_of(corpus), "--root", str(root), *TWO_MODELS]) == 0
    assert stats.stat().st_mtime_ns == before


@pytest.mark.slow
def test_corrupted_shard_through_the_job(ray_cluster, tmp_path):
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    good = sample_members("good", photo(0))
    a, b = sample_members("a", photo(1), "cap a"), sample_members("b", photo(2), "cap b")
    members = (good + [("bad.jpg", b"not a jpeg"), ("empty.jpg", b""), ("evil.pyd", payload)]
               + sample_members("../../escape", photo(3))
               + [m for pair in zip(a, b, strict=True) for m in pair])  # ungrouped
    shard = write_tar(tmp_path / "in" / "00000.tar", members)
    root = tmp_path / "out"
    assert embed.main(["--input", str(shard), "--root", str(root), "--models", "[timm:resnet18]",
                       "--weights", "{timm:resnet18: random}"]) == 0
    _, meta, stats = read_outputs(root, "timm-resnet18")
    assert [r["key"] for r in meta["00000"]] == ["good", "____escape", "a", "b"]
    assert [r["caption"] for r in meta["00000"]][2:] == ["cap a", "cap b"]
    s = stats["00000"]
    assert s["skipped"] == {"not_an_image": 1, "empty_member": 1, "no_image": 1}
    assert s["notes"]["ungrouped_shard"] == 1 and s["notes"]["key_sanitised"] == 1
    assert not marker.exists()
    assert not list(root.rglob("*escape*.npy"))


@pytest.mark.slow
def test_killed_job_resumes_without_duplicates_or_losses(ray_cluster, demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    model = "timm:vit_tiny_patch16_224"  # random weights: a real ViT, 3x cheaper than CLIP B/32
    args = ["--input", shards_of(corpus), "--models", f"[{model}]",
            "--weights", f"{{{model}: random}}", "--batch_size", "4",
            "--ray_address", ray_cluster.address]
    killed_root, ref_root = tmp_path / "killed", tmp_path / "ref"
    stats_dir = killed_root / "embeddings" / model_dir_name(model) / "stats"
    seen_at_kill: dict = {}

    def look() -> None:  # what a reader sees: complete shards are whole, the rest have no stats
        for s in sorted(p.stem for p in stats_dir.glob("*.json")):
            meta = killed_root / "embeddings" / model_dir_name(model) / "metadata" / f"{s}.parquet"
            emb = killed_root / "embeddings" / model_dir_name(model) / "img_emb" / f"{s}.npy"
            seen_at_kill[s] = (len(pq.read_table(meta)), np.load(emb).shape[0])

    log = kill_and_resume([sys.executable, "-m", "jobs.embed", *args, "--root", str(killed_root)],
                          1, killed_root, cwd=Path(__file__).parents[1], on_killed=look)
    assert 1 <= len(seen_at_kill) < 4, "the kill must land midway"
    assert all(rows == vectors for rows, vectors in seen_at_kill.values())
    assert f"{4 - len(seen_at_kill)} shards to do, {len(seen_at_kill)} already complete" in log
    assert embed.main([*args, "--root", str(ref_root)]) == 0
    assert not [p for p in killed_root.rglob("*") if ".tmp-" in p.name]
    killed, ref = read_outputs(killed_root, model_dir_name(model)), read_outputs(ref_root, model_dir_name(model))
    assert killed[1] == ref[1]  # metadata: same rows, same order, nothing doubled or lost
    keys = [r["key"] for rows in killed[1].values() for r in rows]
    assert len(keys) == len(set(keys))
    for s in ref[0]:
        np.testing.assert_array_equal(killed[0][s], ref[0][s])


def test_validation_fails_before_any_work(tmp_path, caplog, capsys):
    root = tmp_path / "out"
    rc = embed.main(["--input", str(tmp_path / "missing" / "{00000..00001}.tar"), "--root", str(root),
                     "--models", "[sscd_v9, clip:ViT-B-32]"])
    out = capsys.readouterr().out
    assert rc == 2
    assert "missing/00000.tar does not exist" in out and "missing/00001.tar" in out
    assert "unknown model 'sscd_v9'" in out
    assert "weights.clip:ViT-B-32" in out
    assert not (root / "embeddings").exists()
    rc = embed.main(["--input", "x.tar", "--batch_sise", "3"])
    assert rc == 2 and "did you mean 'batch_size'" in capsys.readouterr().out
