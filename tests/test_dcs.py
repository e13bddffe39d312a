"""Caption ranking: DCS against an independent diffusers computation (eps and v models),
batch independence, ECS and verbatim labels on constructed images, caption sets, and the
job killed mid-scoring and resubmitted (no caption lost or scored twice), report rendered."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from diffrep.diffusion.scores import Denoiser, edge_consistency, sobel_edges
from diffrep.diffusion.tiny import build_tiny_pipeline
from diffrep.rank.captions import build_caption_shards
from diffrep.rank.verbatim import judge, precision_vs_found, stable_mask, to_unit
from diffrep.storage import TMP_MARKER
from tests.conftest import DEMO_MODEL
from tests.helpers import kill_and_resume, need_chromium, photo, render_report

CAPTIONS = ["a photo of a cat", "an astronaut riding a horse", "the starry night", "", "x y z",
            "a bowl of fruit on a table", "a red car", "a cat photo"]


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def pipe(request, tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp(request.param), seed=3, resolution=32,
                               prediction_type=request.param)


def reference_dcs(pipe, caption: str, guidance: float, seed: int, resolution: int) -> float:
    """One Euler step from sigma_max to 0 with diffusers' own Euler scheduler ("trailing"
    spacing: one step starts at the last training timestep, as k-diffusion's does)."""
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    sched.set_timesteps(1)
    sigma_max = float(sched.sigmas[0])
    assert float(sched.sigmas[-1]) == 0.0
    latent = resolution // pipe.vae_scale_factor
    eps = torch.randn((1, 4, latent, latent), generator=torch.Generator().manual_seed(seed))
    x = sigma_max * eps
    cond, uncond = pipe.encode_prompt(caption, "cpu", 1, True, negative_prompt="")
    with torch.no_grad():
        t = sched.timesteps[0]
        model_in = sched.scale_model_input(torch.cat([x, x]), t)
        out = pipe.unet(model_in, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        u, c = out.chunk(2)
        x0 = sched.step(u + guidance * (c - u), t, x).prev_sample
    return float(((x - x0) ** 2).mean())


def test_dcs_equals_a_step_by_step_diffusers_computation(pipe):
    den = Denoiser(pipe, guidance_scale=7.5, seed=11)
    if pipe.scheduler.config.prediction_type == "epsilon":
        assert den.sigma == pytest.approx(14.6146, abs=1e-3)  # SD v1's sigma_max
    ours = den.scores(CAPTIONS, resolution=32)["dcs"]
    ref = [reference_dcs(pipe, c, 7.5, 11, 32) for c in CAPTIONS]
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    assert len(set(np.round(ours, 6))) == len(CAPTIONS)  # the text matters


def test_scores_do_not_depend_on_batch(pipe):
    den = Denoiser(pipe, guidance_scale=5.0, seed=2)
    full = den.scores(CAPTIONS, 32)
    for size in (1, 3):
        parts = [Denoiser(pipe, 5.0, 2).scores(CAPTIONS[i:i + size], 32) for i in range(0, len(CAPTIONS), size)]
        for key in ("dcs", "noise_magnitude"):
            np.testing.assert_allclose(np.concatenate([p[key] for p in parts]), full[key], rtol=1e-5, atol=1e-4)
    other_seed = Denoiser(pipe, 5.0, 3).scores(CAPTIONS, 32)["dcs"]
    assert not np.allclose(other_seed, full["dcs"])


@pytest.fixture(scope="module")
def eps_pipe(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("eps"), seed=3, resolution=32,
                               prediction_type="epsilon")


def test_noise_magnitude_is_the_conditional_minus_unconditional_prediction(eps_pipe):
    """The identity is stated for epsilon-prediction models."""
    pipe = eps_pipe
    den = Denoiser(pipe, seed=5)
    x = den.noise(32, 5)
    eps_c = den.model_output(x, den.encode(CAPTIONS[:2]))
    eps_u = den.model_output(x, den.encode([""]))
    expected = (eps_c - eps_u).flatten(1).norm(dim=1).numpy()
    np.testing.assert_allclose(den.scores(CAPTIONS[:2], 32)["noise_magnitude"], expected, rtol=1e-5)


def square(size: int, at: tuple[int, int], side: int) -> np.ndarray:
    img = np.zeros((size, size, 3))
    img[at[0]:at[0] + side, at[1]:at[1] + side] = 1.0
    return img


def test_sobel_edges_and_ecs_on_known_images():
    step = np.zeros((1, 16, 16, 3))
    step[:, :, 8:] = 1.0
    edges = sobel_edges(step, 0.5)[0]
    assert edges[1:-1, 7:9].all() and edges.sum() == 2 * 14  # two columns, border rows excluded
    assert not sobel_edges(np.full((1, 16, 16, 3), 0.3), 0.1).any()
    same = sobel_edges(np.stack([square(32, (8, 8), 12)] * 4), 0.5)
    assert edge_consistency(same, gamma=0.75) == same[0].sum() > 0  # consistent: all count
    moving = sobel_edges(np.stack([square(32, (2 + 7 * j, 2 + 7 * j), 6) for j in range(4)]), 0.5)
    assert edge_consistency(moving, gamma=0.75) == 0  # no pixel is an edge in > 75% of seeds
    assert edge_consistency(moving, gamma=0.2) == np.logical_or.reduce(moving).sum()


def test_verbatim_labels_on_constructed_images():
    own = to_unit(photo(1, (96, 96)))
    unrelated = to_unit(photo(2, (96, 96)))
    assert judge([own.copy()], [own], [], []).label == "MV"
    assert judge([own.copy()], [unrelated, own], [], []).label == "MV"  # any of its images
    assert judge([unrelated], [own], [own], []).label == "none"
    assert judge([unrelated, own.copy()], [], [unrelated * 0.2, own], []).label == "RV"
    # a template: the same layout with a region whose content varies across the group
    group = []
    for s in range(4):
        img = own.copy()
        img[64:192, 64:192] = to_unit(photo(10 + s, (96, 96)))[64:192, 64:192]
        group.append(img)
    mask = stable_mask(group)
    assert not mask[80:176, 80:176].any() and mask[:40].all()
    generation = own.copy()
    generation[64:192, 64:192] = to_unit(photo(99, (96, 96)))[64:192, 64:192]
    v = judge([generation], [], [group[0]], [(group[0], mask)])
    assert v.label == "TV" and v.template_distance < 0.01 < 0.12 < v.retrieval_distance
    found, precision = precision_vs_found(np.array([0.9, 0.1, 0.5, 0.7]), np.array([1, 1, 0, 0]))
    assert found.tolist() == [1, 1, 1, 2] and precision.tolist() == [1.0, 0.5, 1 / 3, 0.5]


def test_caption_sets_dedup_and_duplication_order(tmp_path):
    rows = {"caption": ["A  cat", "a cat", "dog", "", None, "a cat ", "bird", "dog"],
            "key": [f"k{i}" for i in range(8)], "url": [f"u{i}" for i in range(8)]}
    half = 4
    pq.write_table(pa.table({k: v[:half] for k, v in rows.items()}), tmp_path / "a.parquet")
    pq.write_table(pa.table({k: v[half:] for k, v in rows.items()}), tmp_path / "b.parquet")
    paths = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    stats = build_caption_shards(paths, str(tmp_path / "w"), str(tmp_path / "c"), num_buckets=3,
                                 captions_per_shard=2)
    assert stats["rows"] == 8 and stats["empty_caption"] == 2 and stats["captions"] == 4
    t = pa.concat_tables([pq.read_table(tmp_path / "c" / f) for f in sorted(os.listdir(tmp_path / "c"))])
    got = {r["caption"]: sorted(r["keys"]) for r in t.to_pylist()}
    assert got == {"A cat": ["k0"], "a cat": ["k1", "k5"], "dog": ["k2", "k7"], "bird": ["k6"]}
    assert sorted(t["caption_id"].to_pylist()) == [0, 1, 2, 3]
    # the most duplicated, by near-duplicate group size when the dedup job's groups are given
    dedup = tmp_path / "dedup"  # a finished dedup output: k6 is in a group of 5
    (dedup / "groups").mkdir(parents=True)
    pq.write_table(pa.table({"key": ["k6", "x1"], "caption": ["bird", "bird "], "group_size": [5, 5]}),
                   dedup / "groups" / "part_00000.parquet")
    (dedup / "summary.json").write_text("{}")
    stats = build_caption_shards(paths, str(tmp_path / "w2"), str(tmp_path / "c2"), 3, 10,
                                 dedup_base=str(dedup), max_captions=2)
    top = pq.read_table(tmp_path / "c2" / "00000.parquet").to_pylist()
    assert [r["caption"] for r in top] == ["bird", "a cat"] and top[0]["duplication"] == 5


KILL_AFTER_UNITS = 4


@pytest.mark.slow
def test_dcs_job_killed_and_resubmitted_loses_and_doubles_nothing(demo_index_root, ray_cluster,
                                                                  tmp_path):
    root, _, _ = demo_index_root
    ckpt = tmp_path / "tiny"
    build_tiny_pipeline(ckpt, seed=0, resolution=32)
    args = [sys.executable, "-m", "jobs.dcs", "--root", str(root), "--run", "killed",
            "--checkpoint", str(ckpt), "--model", DEMO_MODEL, "--resolution", "32", "--batch_size", "2",
            "--captions_per_shard", "3", "--num_buckets", "1", "--top_n", "4", "--ecs_seeds", "2",
            "--gt_seeds", "1", "--gt_steps", "2", "--ray_address", ray_cluster.address,
            "--progress_interval_s", "1"]
    scores = root / "rankings" / "killed" / "scores"
    mtimes: dict[str, int] = {}

    def score_files() -> dict[str, int]:
        return {f: os.stat(scores / f).st_mtime_ns for f in os.listdir(scores) if f.endswith(".parquet")}

    log = kill_and_resume(args, KILL_AFTER_UNITS, root / "rankings" / "killed",
                          on_killed=lambda: mtimes.update(score_files()))
    n_shards = len(list((root / "rankings" / "killed" / "captions").glob("*.parquet")))
    done_before = mtimes
    # the caption step's task is unit 1; the kill lands after scoring shards
    assert KILL_AFTER_UNITS - 1 <= len(done_before) < n_shards
    assert f"{n_shards - len(done_before)} to do" in log  # only the unscored
    for f, mtime in done_before.items():
        assert os.stat(scores / f).st_mtime_ns == mtime
    captions = pa.concat_tables([pq.read_table(p) for p in sorted((root / "rankings/killed/captions").glob("*.parquet"))])
    ranked = pq.read_table(root / "rankings" / "killed" / "ranked.parquet")
    assert sorted(ranked["caption_id"].to_pylist()) == sorted(captions["caption_id"].to_pylist())
    assert len(set(ranked["caption"].to_pylist())) == len(ranked)
    assert not any(TMP_MARKER in f for f in os.listdir(scores))  # no partial file left visible
    dcs = ranked["dcs"].to_numpy()
    assert (np.diff(dcs) <= 0).all()
    truth = pa.concat_tables([pq.read_table(p) for p in sorted((root / "rankings/killed/truth").glob("*.parquet"))])
    assert truth["caption_id"].to_pylist() == ranked["caption_id"].to_pylist()[:4]
    # a random-weight model copies nothing: no caption of its top 4 is a verbatim copy, and
    # every generation is farther from its caption's own images than delta_V
    assert set(truth["label"].to_pylist()) <= {"none", "untested"}, truth["label"].to_pylist()
    summary = json.loads((root / "rankings" / "killed" / "summary.json").read_text())
    distances = [d for d in truth["matching_distance"].to_pylist() if d is not None]
    assert distances and min(distances) > summary["delta_v"], (distances, summary["delta_v"])
    need_chromium()
    rendered = render_report(root / "rankings" / "killed" / "report.html", tmp_path)
    assert rendered["svgs"] == 1 and rendered["images_ok"] == rendered["images"] >= 4 * 3
