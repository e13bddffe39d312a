"""The `diffrep` command and the one job runner: every job's help and config-error path,
exit codes and one-line failures, resources released, and a folder of images turned into a
corpus and searched from a directory outside the repository."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from diffrep import cli
from diffrep.config import ConfigError
from diffrep.jobs import JOBS
from diffrep.runner import Job, JobFailed

DIFFREP = Path(sys.executable).parent / "diffrep"  # the console script `make setup` installs
TIMEOUT_S = 300


def diffrep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([str(DIFFREP), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)


def test_console_command_lists_the_jobs_from_any_directory(tmp_path):
    proc = diffrep("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    for name in JOBS:
        assert f"  {name} " in proc.stdout
    proc = diffrep("dedupe", cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean 'dedup'" in proc.stdout


@pytest.mark.parametrize("name", list(JOBS))
def test_every_job_has_help_under_its_own_name(name, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: diffrep {name} ") and "--debug" in out


@pytest.mark.parametrize("name", list(JOBS))
def test_every_job_exits_2_naming_an_unknown_key(name, capsys):
    assert cli.main([name, "--no_such_key", "1"]) == 2
    out = capsys.readouterr().out
    assert f"ERROR {name}: command line: --no_such_key: unknown config key" in out
    assert "Traceback" not in out


class Closable:
    closed = 0

    def close(self) -> None:
        Closable.closed += 1


@pytest.mark.parametrize("error, code, line", [
    (None, 0, "INFO boom: done in"),
    (ConfigError("boom.k must be > 0"), 2, "ERROR boom: boom.k must be > 0"),
    (JobFailed("2 unit(s) failed"), 1, "ERROR boom failed: JobFailed: 2 unit(s) failed (raised at"),
    (ZeroDivisionError("division by zero"), 1, "ERROR boom failed: ZeroDivisionError: division by zero"),
])
def test_runner_exit_codes_one_line_and_release_on_every_path(error, code, line, capsys):
    from diffrep.copybench.run import CopyBenchConfig

    def run(cfg, ctx):
        ctx.release(Closable())
        ctx.working()
        if error is not None:
            raise error
        return "all good"

    job = Job("boom", CopyBenchConfig, run, "a test job", section="copybench")
    before = Closable.closed
    assert job.main([]) == code
    out = capsys.readouterr().out
    assert line in out and "Traceback" not in out
    assert Closable.closed == before + 1
    if code:  # --debug shows where it came from
        assert job.main(["--debug"]) == code
        assert "Traceback (most recent call last)" in capsys.readouterr().out


def test_every_job_module_declares_its_job():
    for name in JOBS:
        job = importlib.import_module(f"diffrep.jobs.{name}").JOB
        assert job.name == name and job.doc and "diffrep " + name in job.doc


def write_folder(folder: Path) -> dict[str, Image.Image]:
    """Mixed inputs: JPEG photos, a PNG diagram with transparency, a GIF, a BMP, a broken
    file, a file of another kind and a sidecar caption. Returns the sources by key."""
    from skimage import data

    folder.mkdir()
    sources: dict[str, Image.Image] = {}
    for name, file_name in (("astronaut", "astronaut"), ("coffee", "coffee"),
                            ("chelsea", "chelsea"), ("rocket", "red_rocket-launch")):
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        img.thumbnail((256, 256))
        img.save(folder / f"{file_name}.jpg", quality=92)
        sources[file_name] = img
    diagram = Image.new("RGBA", (240, 160), (0, 0, 0, 0))
    draw = ImageDraw.Draw(diagram)
    for i, colour in enumerate([(220, 30, 30, 255), (30, 160, 40, 255), (30, 60, 220, 255)]):
        draw.rectangle([10 + 75 * i, 30 + 20 * i, 70 + 75 * i, 120], fill=colour)
        draw.line([40 + 75 * i, 120, 40 + 75 * i, 150], fill=(0, 0, 0, 255), width=3)
    diagram.save(folder / "diagram.png")
    sources["diagram"] = diagram
    (folder / "diagram.txt").write_text("three coloured boxes")
    camera = Image.fromarray(data.camera()).resize((200, 200))
    camera.save(folder / "camera.gif")
    sources["camera"] = camera
    (folder / "sub").mkdir()
    Image.fromarray(data.checkerboard()).save(folder / "sub" / "board.bmp")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    (folder / "notes.md").write_text("not an image")
    return sources


@pytest.mark.ray
@pytest.mark.slow
def test_folder_to_corpus_to_search_from_outside_the_repository(ray_cluster, tmp_path):
    """diffrep shards -> embed -> build_index -> search (relative paths, cwd outside the
    repository): an edited copy of the transparent diagram finds its source; dedup then
    fails with exit 1 and one line when its output folder cannot be written."""
    sources = write_folder(tmp_path / "images")
    proc = diffrep("shards", "--folder", "images", "--out_dir", "corpus", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    assert stats["counts"]["images"] == 7
    assert stats["counts"]["converted:gif"] == 1 and stats["counts"]["converted:bmp"] == 1
    assert stats["counts"]["skip:unsupported_format:md"] == 1
    assert sorted(stats["skipped_files"]) == ["broken.jpg", "notes.md"]
    meta = pq.read_table(tmp_path / "corpus" / "metadata.parquet").to_pylist()
    assert {m["key"] for m in meta} == {*sources, "sub_board"}
    captions = {m["key"]: m["caption"] for m in meta}
    assert captions["diagram"] == "three coloured boxes" and captions["red_rocket-launch"] == "red rocket launch"
    # original bytes kept
    import tarfile

    with tarfile.open(tmp_path / "corpus" / "00000.tar") as tar:
        stored = tar.extractfile("diagram.png").read()
    assert stored == (tmp_path / "images" / "diagram.png").read_bytes()

    edited = tmp_path / "edited"
    edited.mkdir()
    copy = sources["diagram"].copy()
    ImageDraw.Draw(copy).text((12, 4), "Figure 3: our pipeline", fill=(0, 0, 0, 255))
    copy.save(edited / "diagram_with_text.png")
    crop = sources["coffee"].crop((20, 10, 236, 160)).resize((180, 125))
    crop.save(edited / "coffee_crop.jpg", quality=70)

    address = ["--ray_address", ray_cluster.address]
    steps = [
        ("embed", "--input", stats["input"].replace(str(tmp_path) + "/", ""), "--root", "out",
         "--models", "[sscd_onnx]", *address),
        ("build_index", "--root", "out", "--model", "sscd_onnx", *address),
        ("search", "--root", "out", "--model", "sscd_onnx", "--images", "edited",
         "--out", "hits.parquet", "--k", "3", "--regions", "false"),  # regions: test_index
    ]
    for step in steps:
        proc = diffrep(*step, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert f"INFO {step[0]}: done in" in proc.stdout and "start-up" in proc.stdout
    hits = pq.read_table(tmp_path / "hits.parquet").to_pandas()
    hits["query"] = [Path(k).stem for k in hits["query_key"]]
    top = hits[hits["rank"] == 0].set_index("query")
    assert top.loc["diagram_with_text", "key"] == "diagram", top
    assert top.loc["diagram_with_text", "similarity"] > 0.8
    assert top.loc["coffee_crop", "key"] == "coffee", top

    (tmp_path / "out" / "dedup").write_text("a file where the dedup folder goes")
    proc = diffrep("dedup", "--root", "out", "--model", "sscd_onnx", *address, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    failed = [ln for ln in proc.stdout.splitlines() if "ERROR dedup failed:" in ln]
    assert len(failed) == 1 and "raised at" in failed[0]
    assert "Traceback" not in proc.stdout
    (tmp_path / "out" / "dedup").unlink()

    # the other jobs' success through the console, relative paths, outside the repository
    testbed = Path(__file__).resolve().parents[1] / "testbed" / "memorizing"
    more = [
        ("dedup", "--root", "out", "--model", "sscd_onnx", *address),
        ("scan", "--root", "out", "--model", "sscd_onnx", "--generated", "edited", "--run",
         "edited", "--baseline_size", "5", "--regions", "false", *address),
        ("dcs", "--root", "out", "--model", "sscd_onnx", "--checkpoint", str(testbed),
         "--top_n", "2", "--ecs_seeds", "1", "--gt_seeds", "1", "--gt_steps", "2", *address),
    ]
    for step in more:
        proc = diffrep(*step, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert f"INFO {step[0]}: done in" in proc.stdout
    scan = json.loads((tmp_path / "out" / "scans" / "edited" / "summary.json").read_text())
    assert scan["checkpoints"]["generated"]["top1"]["count"] == 2
    assert (tmp_path / "out" / "rankings" / "dcs" / "ranked.parquet").exists()


def test_relative_paths_are_made_absolute_and_refused_under_ray_job_submit(tmp_path, monkeypatch):
    from diffrep.paths import absolute_paths
    from diffrep.rank.config import RankConfig
    from diffrep.search.config import SearchConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    cfg = absolute_paths(SearchConfig(root="out", images="q/*.png", queries=None), "search")
    assert (cfg.root, cfg.images) == (f"{tmp_path}/out", f"{tmp_path}/q/*.png")
    rank = absolute_paths(RankConfig(root="s3://b/r", checkpoint="ckpt"), "dcs")
    assert rank.root == "s3://b/r" and rank.checkpoint == f"{tmp_path}/ckpt"
    hub = absolute_paths(RankConfig(root="/abs", checkpoint="org/model"), "dcs")
    assert hub.checkpoint == "org/model" and hub.dedup_groups == "auto"  # a hub id, a special value
    # under `ray job submit --working-dir`, the driver runs in Ray's copy of the directory
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    with pytest.raises(ConfigError, match=r"search.root 'out' is relative: under `ray job submit`"):
        absolute_paths(SearchConfig(root="out"), "search")
    assert absolute_paths(SearchConfig(root="/shared/out"), "search").root == "/shared/out"


@pytest.mark.ray
def test_a_job_without_an_address_starts_its_own_ray_not_a_running_one(ray_cluster, tmp_path):
    """`ray_address: null` means a local Ray of the job's own: joining another local
    cluster (a test session's, another job's) made the job die with it."""
    probe = ("from diffrep.ray_utils import init_ray; import ray; init_ray(); "
             "print('GCS', ray.get_runtime_context().gcs_address)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
    assert out.returncode == 0, out.stdout[-2000:]
    gcs = [ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("GCS ")]
    assert gcs and gcs[0] != ray_cluster.address


def test_shards_are_cut_every_n_samples_and_read_back_in_order(tmp_path):
    from collections import Counter

    from diffrep.data.folder import write_shards
    from diffrep.data.reader import iter_raw_samples

    items = [(f"k{i}", {"txt": f"caption {i}".encode(), "json": b"{}"}) for i in range(5)]
    urls = write_shards(str(tmp_path), iter(items), 2)
    assert [Path(u).name for u in urls] == ["00000.tar", "00001.tar", "00002.tar"]
    read = [(r.key, r.members["txt"]) for u in urls for r in iter_raw_samples(u, Counter())]
    assert read == [(k, m["txt"]) for k, m in items]
    assert write_shards(str(tmp_path / "none"), iter([]), 2) == []
