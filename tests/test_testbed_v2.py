"""Testbed v2's pool (diffrep.testbed.{objects,scenes,scene_pool}): object cut-outs read
from a package tree, deduplicated by the real SSCD, and a small pool with its four kinds
of memorization, one caption generator and its truth. The cut-outs here are drawn by the
test (CI has no Debian image packages); the photos are the pip-installed ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffrep.testbed import scene_pool, scenes
from diffrep.testbed.objects import CutOut, load_cutouts
from tests.conftest import requires_sscd


def drawn_cutouts(n: int, seed: int = 0, textured: bool = False) -> list[CutOut]:
    """n RGBA polygons, each a different random shape and colour; `textured`: each filled
    with its own random colour blotches instead (objects with detail, as the packages'
    clip art and photos have, which flat polygons lack)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
        k = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(20, 46, k)
        outline = [(48 + r * np.cos(a), 48 + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
        if textured:
            mask = Image.new("L", (96, 96), 0)
            ImageDraw.Draw(mask).polygon(outline, fill=255)
            blotches = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(
                (96, 96), Image.Resampling.BICUBIC).convert("RGBA")
            img.paste(blotches, (0, 0), mask)
        else:
            ImageDraw.Draw(img).polygon(outline, fill=tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,))
        out.append(CutOut(f"shape{i}", "drawn", f"drawn/{i}.png", img))
    return out


@pytest.fixture(scope="module")
def photos():
    from diffrep.data.demo import load_source_photos

    return {k: v.convert("RGB") for k, v in sorted(load_source_photos(use_opencv_doc=False).items())}


SMALL = scene_pool.ScenePoolConfig(side=32, num_memorized=3, paraphrases=2, template_variants=4,
                                   object_scenes=5, object_prompts=3, once_a=30, once_b=60)


@pytest.fixture(scope="module")
def small_pool(photos):
    return scene_pool.build_scene_pool(SMALL, photos, drawn_cutouts(120))


def test_cutouts_are_read_named_and_skipped_by_reason(tmp_path):
    clip, tux = tmp_path / "openclipart", tmp_path / "tuxpaint"
    shape = drawn_cutouts(1)[0].image
    for rel in ("animals/bison_leif_lodahl_01.png", "shapes/star_01.png",
                "people/Traslocatore03_ab_01.png", "unsorted/0042_01.png"):
        (clip / rel).parent.mkdir(parents=True, exist_ok=True)
        shape.save(clip / rel)
    (clip / "animals" / "broken_01.png").write_bytes(b"\x89PNG not really")
    Image.new("RGBA", (10, 10), (255, 0, 0, 255)).save(clip / "animals" / "tiny_01.png")
    (tux / "animals").mkdir(parents=True)
    shape.save(tux / "animals" / "badger.png")
    (tux / "animals" / "badger.txt").write_text("A badger.\nfr.utf8=Un blaireau.\n")
    cutouts, skipped = load_cutouts(roots=(clip, tux))
    # a title word loses its digits; a title of digits alone leaves the folder's name
    assert [(c.name, c.category) for c in cutouts] == [
        ("bison", "animals"), ("traslocatore", "people"), ("unsorted", "unsorted"), ("badger", "animals")]
    assert dict(skipped) == {"left_out_category": 1, "unreadable": 1, "too_small_or_empty": 1}
    assert cutouts[0].image.mode == "RGBA" and cutouts[0].image.getchannel("A").getbbox() == (0, 0) + cutouts[0].image.size
    with pytest.raises(FileNotFoundError, match="apt-get install openclipart-png"):
        load_cutouts(roots=(tmp_path / "nothing",))


@requires_sscd
def test_with_an_embedder_no_once_seen_scene_is_a_copy_of_another(photos):
    from diffrep.models import create_embedder, default_weights

    embedder = create_embedder("sscd_onnx", weights=default_weights("sscd_onnx"), device="cpu")
    cfg = scene_pool.ScenePoolConfig(**{**SMALL.__dict__, "max_similarity": 0.45})
    images, entries, _, redrawn = scene_pool.build_scene_pool(cfg, photos, drawn_cutouts(160), embedder,
                                                              batch_size=16)
    vectors = embedder.embed_images([Image.fromarray(im) for im in images])
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    once = [e.index for e in entries if e.kind == "once"]
    assert len(once) == max(cfg.once_a - cfg.special(), cfg.once_b - cfg.num_memorized)
    assert sims[once].max() <= cfg.max_similarity + 1e-4
    # the drawn objects on 32 px mosaics are alike to SSCD: some candidates were redrawn
    assert redrawn >= 1


def test_pool_kinds_sizes_and_truth(small_pool):
    images, entries, prompts, _ = small_pool
    kinds = [e.kind for e in entries]
    n = SMALL.special() + max(SMALL.once_a - SMALL.special(), SMALL.once_b - SMALL.num_memorized)
    assert images.shape == (n, 32, 32, 3) and len(entries) == n
    assert (kinds.count("memorized"), kinds.count("template"), kinds.count("object")) == (3, 4, 5)
    # one object in every scene of every kind: a caption's structure carries no kind
    assert all("+" not in e.source for e in entries)
    assert len({e.caption for e in entries}) == len(entries)  # distinct captions
    flat = images.reshape(len(images), -1)
    assert len(np.unique(flat, axis=0)) == len(images)  # distinct images
    # once-seen scenes share no object with any other scene
    once_sources = [e.source for e in entries if e.kind == "once"]
    assert len(set(once_sources)) == len(once_sources)
    # object kind: the same copied object in every scene, each scene different
    obj = [e for e in entries if e.kind == "object"]
    assert len({e.source for e in obj}) == 1 and len({e.caption for e in obj}) == len(obj)
    assert all(0 <= e.box[0] < e.box[2] <= 32 and 0 <= e.box[1] < e.box[3] <= 32 for e in obj)
    # template family: variants differ only inside the varying object's box
    tpl = [e for e in entries if e.kind == "template"]
    mask = np.ones((32, 32), bool)
    for e in tpl:
        left, top, right, bottom = e.box
        mask[max(0, top - 1):bottom + 1, max(0, left - 1):right + 1] = False
    first = images[tpl[0].index].astype(int)
    assert mask.sum() > 200 and all(np.abs(images[e.index].astype(int) - first)[mask].max() <= 2 for e in tpl)
    # prompts that are not training captions: paraphrases of each memorized scene, new
    # scenes with the copied object
    captions = {e.caption for e in entries}
    para = [p for p in prompts if p["kind"] == "paraphrase"]
    assert len(para) == 3 * 2 and all(p["caption"] not in captions and p["of"] in captions for p in para)
    assert {p["index"] for p in para} == {e.index for e in entries if e.kind == "memorized"}
    objp = [p for p in prompts if p["kind"] == "object_prompt"]
    assert len(objp) == 3 and all(p["index"] == -1 and p["cutout"] == obj[0].source.split("+")[0] for p in objp)


def test_training_rows_and_truth_of_both_models(small_pool):
    images, entries, prompts, _ = small_pool
    rows_a = scene_pool.training_rows(SMALL, entries, "A")
    rows_b = scene_pool.training_rows(SMALL, entries, "B")
    assert len(rows_a) == SMALL.once_a and len(rows_b) == SMALL.once_b
    repeats = {entries[i].kind: r for i, r in rows_a}
    assert repeats == {"memorized": 64, "template": 8, "object": 12, "once": 1}
    # B: the memorized scenes once, A's once-seen scenes and more; not the families
    assert {r for _, r in rows_b} == {1}
    assert {entries[i].kind for i, _ in rows_b} == {"memorized", "once"}
    assert {i for i, _ in rows_a if entries[i].kind in ("memorized", "once")} <= {i for i, _ in rows_b}
    truth_a = scene_pool.truth_rows(entries, rows_a, "A", prompts)
    truth_b = scene_pool.truth_rows(entries, rows_b, "B", prompts)
    by_kind = {t["kind"]: t for t in truth_a}
    assert {k: by_kind[k]["verbatim_type"] for k in by_kind} == {
        "memorized": "MV", "template": "TV", "object": "object", "once": "none",
        "paraphrase": "MV", "object_prompt": "object"}
    assert all(t["memorized"] == (t["kind"] != "once") for t in truth_a)
    assert not any(t["memorized"] for t in truth_b)
    assert [t["repeats"] for t in truth_a if t["kind"] in ("paraphrase", "object_prompt")] == [0] * 9


def test_pool_is_deterministic_and_captions_name_the_objects(photos, small_pool):
    cutouts = drawn_cutouts(120)
    images, entries, prompts, _ = scene_pool.build_scene_pool(SMALL, photos, cutouts)
    assert np.array_equal(images, small_pool[0]) and prompts == small_pool[2]
    assert [e.caption for e in entries] == [e.caption for e in small_pool[1]]
    by_source = {c.source: c.name for c in cutouts}
    for e in entries:
        assert all(by_source[s] in e.caption for s in e.source.split("+")), e
    # one generator for every kind: each kind's captions use the same sentence templates
    articles = [(w, nxt) for e in entries for w, nxt in zip(e.caption.split(), e.caption.split()[1:], strict=False)
                if w in ("a", "an")]
    assert articles and all((w == "an") == (nxt[0] in "aeiou") for w, nxt in articles), articles
    starts = {kind: {e.caption.split()[0] for e in entries if e.kind == kind} for kind in ("memorized", "once")}
    assert starts["memorized"] <= starts["once"]
    with pytest.raises(ValueError, match="object cut-outs"):
        scene_pool.build_scene_pool(SMALL, photos, cutouts[:20])
    assert scenes.render(scenes.sample_scene(np.random.default_rng(0), photos, [0]), 32, photos,
                         cutouts).shape == (32, 32, 3)


def test_corpus_holds_training_images_and_prompts_name_their_images(small_pool, tmp_path):
    import json

    import pyarrow.parquet as pq

    from diffrep.testbed.build import write_dataset
    from diffrep.testbed.corpus import write_testbed_corpus

    images, entries, prompts, _ = small_pool
    write_dataset(tmp_path / "tb" / "data", scene_pool.config_dict(SMALL), images, entries, prompts)
    rows = scene_pool.training_rows(SMALL, entries, "A")
    (tmp_path / "tb" / "A" / "testbed").mkdir(parents=True)
    (tmp_path / "tb" / "A" / "testbed" / "truth.json").write_text(json.dumps(
        {"captions": scene_pool.truth_rows(entries, rows, "A", prompts)}))
    manifest = write_testbed_corpus(tmp_path / "tb", tmp_path / "tb" / "A", str(tmp_path / "corpus"),
                                    num_shards=2, once_prompts=5)
    meta = pq.read_table(tmp_path / "corpus" / "metadata.parquet").to_pylist()
    assert manifest["num_samples"] == len(meta) == SMALL.once_a  # training images only, once each
    key_of_caption = {m["caption"]: m["key"] for m in meta}
    table = pq.read_table(tmp_path / "corpus" / "prompts.parquet").to_pylist()
    kinds = [t["kind"] for t in table]
    assert (kinds.count("paraphrase"), kinds.count("object_prompt"), kinds.count("once")) == (6, 3, 5)
    for t in table:
        if t["kind"] == "paraphrase":  # the key of the memorized image it rewords
            original = next(p["of"] for p in prompts if p["caption"] == t["prompt"])
            assert t["key"] == key_of_caption[original]
        elif t["kind"] == "object_prompt":
            assert t["key"] is None
        else:
            assert t["key"] == key_of_caption[t["prompt"]]


@requires_sscd
def test_object_similarity_finds_the_copied_object_in_its_scenes(photos):
    from diffrep.models import create_embedder, default_weights
    from diffrep.testbed.verify import object_references, object_similarity

    cfg = scene_pool.ScenePoolConfig(**{**SMALL.__dict__, "side": 128, "once_a": 40, "once_b": 40})  # 64 px: too few pixels for the region grid (0.44 against 0.45)
    images, entries, _, _ = scene_pool.build_scene_pool(cfg, photos, drawn_cutouts(120, textured=True))
    embedder = create_embedder("sscd_onnx", weights=default_weights("sscd_onnx"), device="cpu")
    rows = [{"index": e.index, "kind": e.kind, "box": list(e.box)} for e in entries]
    obj = [e.index for e in entries if e.kind == "object"]
    # references from all but the last object scene; the last one and 8 once-seen scenes
    # play the generations
    refs = object_references(embedder, images, [r for r in rows if r["index"] != obj[-1]])
    once = [e.index for e in entries if e.kind == "once"][:8]
    gens = images[[obj[-1], *once]].astype(np.float32)[:, None] / 255
    sims = object_similarity(embedder, gens, refs)[:, 0]
    assert refs.shape[0] == len(obj) - 1
    print("object similarity: copied", sims[0], "once-seen", sims[1:])
    assert sims[0] > sims[1:].max(), sims


def test_a_testbed_build_resumes_without_training_a_built_model_again(tmp_path):
    """build_testbed with model A only, then with A and B: A's files are not written again,
    B is trained with the VAE A was trained with, and build.json records A as resumed; a
    different data config in the same folder is refused."""
    import torch

    from diffrep.testbed import data as tdata
    from diffrep.testbed.build import build_testbed
    from diffrep.testbed.train import TrainConfig

    threads = torch.get_num_threads()  # build_testbed sets them; the next test gets them back
    data = tdata.DataConfig(num_memorized=2, memorized_repeats=4, template_variants=2, template_repeats=2,
                            once_a=12, once_b=20)
    train = TrainConfig(vae_steps=2, vae_batch=4, unet_steps=2, unet_batch=4, warmup_steps=1)
    build_testbed(tmp_path, data, train, models=("A",))
    a_unet = tmp_path / "memorizing" / "unet" / "diffusion_pytorch_model.safetensors"
    a_bytes, a_mtime = a_unet.read_bytes(), a_unet.stat().st_mtime_ns
    info = build_testbed(tmp_path, data, train, models=("A", "B"))
    assert a_unet.stat().st_mtime_ns == a_mtime and a_unet.read_bytes() == a_bytes
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "large-data" / vae).read_bytes() == (tmp_path / "memorizing" / vae).read_bytes()
    assert info["models"]["memorizing"]["resumed"] and "resumed" not in info["models"]["large-data"]
    # the VAE was read back, not trained: build.json says from where, and no training time
    assert info["vae_read_back_from"] == "memorizing" and "vae_seconds" not in info
    assert json.loads((tmp_path / "build.json").read_text()) == info
    # everything built: a third run trains and writes nothing
    build_json = tmp_path / "build.json"
    mtime = build_json.stat().st_mtime_ns
    assert build_testbed(tmp_path, data, train, models=("A", "B")) == info
    assert build_json.stat().st_mtime_ns == mtime and a_unet.stat().st_mtime_ns == a_mtime
    assert info["models"]["large-data"]["distinct"] == 20
    with pytest.raises(ValueError, match="once_b"):
        build_testbed(tmp_path, tdata.DataConfig(once_a=12, once_b=24), train, models=("A", "B"))
    torch.set_num_threads(threads)


def test_a_testbed_build_reads_back_a_pool_built_before(tmp_path):
    """A pool already under <out_dir>/data (built where the image packages and SSCD are)
    is read back, not rebuilt, and the VAE and model are trained on it (a GPU machine
    trains what a CPU machine built); a pool built with another config is refused."""
    import torch

    from diffrep.testbed import data as tdata
    from diffrep.testbed.build import build_pool, build_testbed
    from diffrep.testbed.train import TrainConfig

    threads = torch.get_num_threads()
    data = tdata.DataConfig(num_memorized=2, memorized_repeats=4, template_variants=2, template_repeats=2,
                            once_a=12, once_b=20)
    build_pool(tmp_path, data)
    npz = tmp_path / "data" / "images.npz"
    pool_bytes, mtime = npz.read_bytes(), npz.stat().st_mtime_ns
    train = TrainConfig(vae_steps=2, vae_batch=4, unet_steps=2, unet_batch=4, warmup_steps=1)
    info = build_testbed(tmp_path, data, train, models=("A",))
    assert npz.stat().st_mtime_ns == mtime and npz.read_bytes() == pool_bytes
    assert "vae_seconds" in info and info["models"]["memorizing"]["distinct"] == 12
    other = tmp_path / "other"
    build_pool(other, data)
    with pytest.raises(ValueError, match="once_b"):
        build_testbed(other, tdata.DataConfig(num_memorized=2, memorized_repeats=4, template_variants=2,
                                              template_repeats=2, once_a=12, once_b=24), train, models=("A",))
    assert not (other / "memorizing").exists()
    torch.set_num_threads(threads)


def test_the_committed_v1_pool_reads_back_with_the_v1_config():
    """testbed/data/pool.json predates the design key: it is v1's ("crops"), so `make
    testbed` on the committed testbed resumes instead of refusing it."""
    from pathlib import Path

    from diffrep.testbed import data as tdata
    from diffrep.testbed.build import read_built_pool
    from diffrep.testbed.scene_pool import ScenePoolConfig

    testbed = Path(__file__).resolve().parents[1] / "testbed"
    images, entries, _, _ = read_built_pool(testbed, tdata.DataConfig())
    assert len(images) == len(entries) == 4000
    with pytest.raises(ValueError, match="design"):
        read_built_pool(testbed, ScenePoolConfig())


def test_the_committed_v2_pool_reads_back_with_the_scenes_defaults():
    """testbed/v2/data was built with the scenes design's defaults (object scenes seen 12
    times): `make testbed-v2` on the committed testbed reads it back instead of refusing
    it, and its captions name the copied object (the naming rule's fix) in every object
    scene and object prompt."""
    import json
    from pathlib import Path

    from diffrep.testbed.build import design_configs, read_built_pool

    testbed = Path(__file__).resolve().parents[1] / "testbed" / "v2"
    images, entries, rows_of, _ = read_built_pool(testbed, design_configs("scenes")[0])
    assert len(images) == len(entries) == 4048
    objects = [e for e in entries if e.kind == "object"]
    assert len(objects) == 32 and all("traslocatore" in e.caption for e in objects)
    prompts = json.loads((testbed / "data" / "pool.json").read_text())["prompts"]
    object_prompts = [p["caption"] for p in prompts if p["kind"] == "object_prompt"]
    assert len(object_prompts) == 16 and all("traslocatore" in c for c in object_prompts)
    a_rows = dict(rows_of(design_configs("scenes")[0], entries, "A"))
    assert {a_rows[e.index] for e in objects} == {12}

