"""The entry points users and `make demo` / `make testbed` run and no other test goes
through: each job run through `diffrep`, small, checking its outputs and exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from diffrep import cli

pytestmark = pytest.mark.slow
TESTBED = Path(__file__).resolve().parents[1] / "testbed"


def test_build_demo_small(tmp_path):
    out = tmp_path / "corpus"
    assert cli.main(["build_demo", "--out_dir", str(out), "--num_shards", "1",
                     "--duplicates_per_source", "0.2", "--planted_copies", "2",
                     "--pasted_copies", "1", "--novel_images", "1", "--tiny_pipelines", "1",
                     "--pipeline_resolution", "32", "--use_opencv_doc", "false"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_shards"] == 1 and (out / "shards" / "00000.tar").exists()
    truth = pq.read_table(out / "generated" / "truth.parquet")
    assert sum(truth["planted"].to_pylist()) == 2 + 1 and truth.num_rows == 2 + 1 + 1  # + novel
    assert (out / "pipelines" / "tiny-0" / "model_index.json").exists()
    # a second run finds the corpus and leaves it
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert cli.main(["build_demo", "--out_dir", str(out), "--num_shards", "1",
                     "--use_opencv_doc", "false", "--tiny_pipelines", "1"]) == 0
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_build_testbed_corpus(tmp_path):
    out = tmp_path / "testbed-corpus"
    assert cli.main(["build_testbed_corpus", "--out_dir", str(out), "--once_prompts", "3",
                     "--testbed", str(TESTBED), "--memorizing", str(TESTBED / "memorizing")]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 1500  # model A's distinct training images
    prompts = pq.read_table(out / "prompts.parquet")
    assert prompts.num_rows == manifest["num_prompts"] == 28 + 3


def test_train_then_verify_testbed_two_steps(tmp_path, capsys):
    """The testbed's training and verification entry points on a two-step model A; the
    verification shows its progress (what it generates, batches done with rate and ETA)."""
    out = tmp_path / "testbed"
    assert cli.main(["train_testbed", "--out_dir", str(out), "--models", "[A]",
                     "--unet_steps", "2", "--vae_steps", "2", "--once_a", "100", "--once_b", "200"]) == 0
    assert (out / "memorizing" / "model_index.json").exists() and not (out / "large-data").exists()
    capsys.readouterr()
    assert cli.main(["verify_testbed", "--testbed", str(out), "--seeds", "1", "--steps", "2",
                     "--once", "2", "--sscd", "false"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "INFO verify_testbed: " in ln]
    assert any("30 captions x 1 seeds, 2 steps" in ln for ln in lines), lines
    assert any("generating: batches 1/1" in ln and "ETA" in ln for ln in lines), lines
    verified = json.loads((out / "verify.json").read_text())
    assert set(verified["summary"]) == {"memorizing"}
    assert (out / "verify.md").read_text().startswith("| model | captions |")


def test_train_testbed_reuses_a_vae_given_and_refuses_one_of_another_shape(tmp_path, capsys):
    """--vae_from: model B trained on model A's VAE (the same weights, no VAE trained,
    build.json says where it came from); a VAE whose latent channels differ from the
    training's: exit 2 naming the job, before any pool is built."""
    tiny = ["--unet_steps", "2", "--vae_steps", "2", "--once_a", "100", "--once_b", "200"]
    first, second = tmp_path / "a", tmp_path / "b"
    assert cli.main(["train_testbed", "--out_dir", str(first), "--models", "[A]", *tiny]) == 0
    capsys.readouterr()
    assert cli.main(["train_testbed", "--out_dir", str(second), "--models", "[B]", "--vae_from",
                     str(first / "memorizing"), *tiny]) == 0
    logged = capsys.readouterr()
    assert "VAE read from" in logged.out + logged.err and "vae step" not in logged.out + logged.err
    weights = "vae/diffusion_pytorch_model.safetensors"
    assert (second / "large-data" / weights).read_bytes() == (first / "memorizing" / weights).read_bytes()
    assert json.loads((second / "build.json").read_text())["vae_from"] == str(first / "memorizing")
    assert cli.main(["train_testbed", "--out_dir", str(tmp_path / "c"), "--models", "[B]",
                     "--vae_from", str(first / "memorizing"), "--latent_channels", "8", *tiny]) == 2
    logged = capsys.readouterr()
    assert "train_testbed" in logged.out + logged.err and "8" in logged.out + logged.err
    assert not (tmp_path / "c").exists()


def test_train_testbed_refuses_a_device_torch_cannot_train_on(tmp_path, capsys):
    """cuda on a machine where torch sees no GPU (CI, this project's CPU machines), or a
    device that is not cpu or cuda: exit 2 naming the key, before any pool or model."""
    import torch

    for device in (["tpu"] if torch.cuda.is_available() else ["tpu", "cuda"]):
        assert cli.main(["train_testbed", "--out_dir", str(tmp_path / "tb"), "--device", device]) == 2
        captured = capsys.readouterr()
        assert "train_testbed.device" in captured.out + captured.err
    assert not (tmp_path / "tb").exists()


def test_detectbench_on_the_committed_testbed(tmp_path):
    out = tmp_path / "detectbench"
    assert cli.main(["detectbench", "--checkpoint", str(TESTBED / "memorizing"), "--max_captions", "40",
                     "--ecs_seeds", "1", "--out_dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {"dcs", "noise_magnitude", "ecs"} <= set(results["results"])
    assert sum(c["label"] for c in results["captions"]) == 28  # every positive kept
    assert (out / "table.md").exists() and (out / "report.html").exists()


@pytest.mark.usefixtures("sscd_weights")
def test_copybench_small(tmp_path):
    out = tmp_path / "copybench"
    assert cli.main(["copybench", "--out_dir", str(out), "--models", "[sscd_onnx]",
                     "--region_models", "[]", "--sets", "[plain]", "--crops_per_photo", "1",
                     "--split_product", "false", "--use_opencv_doc", "false"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "sscd_onnx" in json.dumps(results)
    assert (out / "table.md").read_text().count("|") > 4
