"""Job configs: file + overrides, clear errors, --help listing every key."""

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from diffrep.config import ConfigError, load_job_config, make_config
from diffrep.embed.config import EmbedConfig

REPO = Path(__file__).parents[1]


def test_file_section_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("root: /r\nembed:\n  input: a.tar\n  batch_size: 8\ndedup: {threshold: 0.9}\n")
    cfg = load_job_config(EmbedConfig, "embed", ["--config", str(cfg_file), "--batch_size", "16",
                                                 "--models", "[sscd_onnx, clip:ViT-B-32]"])
    assert (cfg.root, cfg.input, cfg.batch_size) == ("/r", "a.tar", 16)
    assert cfg.models == ["sscd_onnx", "clip:ViT-B-32"]
    assert cfg.storage_dtype == "float16"  # default kept


@pytest.mark.parametrize("overrides, message", [
    ({"input": "a.tar", "batch_sise": 3}, "did you mean 'batch_size'"),
    ({"input": "a.tar", "batch_size": "many"}, "embed.batch_size = 'many' should be int"),
    ({"input": "a.tar", "storage_dtype": "int8"}, "one of 'float16', 'float32'"),
    ({}, "missing config key(s) ['input']"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        make_config(EmbedConfig, "embed", None, overrides)
    assert message in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("dsc: {checkpoint: x}\n", "unknown section `dsc`; did you mean 'dcs'?"),
    ("build_index: {num_shards: 2}\n", "the build_index job reads the `index` section"),
    ("rot: /r\n", "unknown top-level key `rot`; did you mean 'root'?"),
])
def test_unknown_sections_and_top_level_keys_are_errors(tmp_path, text, message):
    """A misnamed section would otherwise run the job silently with its defaults."""
    path = tmp_path / "c.yaml"
    path.write_text("root: /r\nembed: {input: a.tar}\n" + text)
    with pytest.raises(ConfigError) as err:
        make_config(EmbedConfig, "embed", path)
    assert message in str(err.value)


def test_abbreviated_flags_are_errors_not_prefix_matches():
    """argparse would take `--batch 3` as `--batch_size 3`: one typo from the wrong key."""
    with pytest.raises(ConfigError, match="--batch: unknown config key; did you mean 'batch_size'"):
        load_job_config(EmbedConfig, "embed", ["--input", "a.tar", "--batch", "3"])


def test_every_job_section_is_known():
    from diffrep.config import JOB_SECTIONS
    from diffrep.jobs import JOBS

    for name in JOBS:
        job = importlib.import_module(f"diffrep.jobs.{name}").JOB
        assert (job.section or job.name) in JOB_SECTIONS, name


def test_old_setting_names_still_work_with_a_deprecation_message(tmp_path, caplog):
    path = tmp_path / "c.yaml"
    path.write_text("embed: {input: a.tar, actors: 3, cpus_per_actor: 1, dtype: float32}\n")
    with caplog.at_level("WARNING", logger="diffrep"):
        cfg = load_job_config(EmbedConfig, "embed", ["--config", str(path),
                                                     "--max_shard_attempts", "5"])
    assert (cfg.workers, cfg.cpus_per_worker, cfg.storage_dtype, cfg.max_attempts) == (3, 1, "float32", 5)
    assert "embed.actors is deprecated: it is now embed.workers" in caplog.text
    assert "--max_shard_attempts is deprecated: it is now embed.max_attempts" in caplog.text
    with pytest.raises(ConfigError, match="dtype and storage_dtype are the same setting"):
        make_config(EmbedConfig, "embed", None, {"input": "a.tar", "dtype": "float16",
                                                 "storage_dtype": "float16"})


def test_run_control_is_defined_once():
    """The jobs with work units share one definition of their run-control keys."""
    from diffrep.config import RunSettings
    from diffrep.dedup.config import DedupConfig
    from diffrep.index.config import IndexConfig
    from diffrep.rank.config import RankConfig
    from diffrep.scan.config import ScanConfig
    from diffrep.search.config import RegionSettings, SearchConfig

    shared = {f.name for f in dataclasses.fields(RunSettings)}
    for cls in (EmbedConfig, IndexConfig, DedupConfig, ScanConfig, RankConfig):
        assert issubclass(cls, RunSettings)
        own = set(cls.__dict__.get("__annotations__", {}))
        assert not own & shared, (cls.__name__, own & shared)
    regions = {f.name for f in dataclasses.fields(RegionSettings)}
    for cls in (SearchConfig, ScanConfig):
        assert issubclass(cls, RegionSettings)
        assert not set(cls.__dict__.get("__annotations__", {})) & regions


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        make_config(EmbedConfig, "embed", tmp_path / "nope.yaml", {})


def test_help_lists_keys_with_defaults():
    out = subprocess.run([sys.executable, "-m", "jobs.embed", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for key in ("--input", "--models", "--batch_size", "--storage_dtype", "--save_tokens", "--root"):
        assert key in out
    flat = " ".join(out.split())  # argparse wraps lines at the terminal width
    assert "stored embeddings (default: 'float16')" in flat and "(default: 64)" in flat


def test_demo_config_is_valid_for_every_job():
    from diffrep.jobs.build_demo import BuildDemoConfig

    cfg = make_config(EmbedConfig, "embed", REPO / "configs" / "demo.yaml")
    assert cfg.root == "data/demo/out" and "sscd_onnx" in cfg.models
    demo = make_config(BuildDemoConfig, "build_demo", REPO / "configs" / "demo.yaml")
    assert demo.out_dir == "data/demo/corpus"


def job_config_classes() -> dict:
    """{config section: config class} of every job the `diffrep` command lists."""
    import importlib

    from diffrep.jobs import JOBS

    out = {}
    for name in JOBS:
        job = importlib.import_module(f"diffrep.jobs.{name}").JOB
        out[job.section or job.name] = job.config
    return out


@pytest.mark.parametrize("path", sorted(str(p) for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_parses_with_its_jobs(path):
    """Every section of every config file is a job's, with only keys that job knows."""
    import yaml

    classes = job_config_classes()
    sections = [k for k, v in yaml.safe_load(Path(path).read_text()).items() if isinstance(v, dict)]
    assert sections
    for section in sections:
        assert section in classes, f"{path}: section {section!r} belongs to no job"
        load_job_config(classes[section], section, ["--config", path])


def test_resumed_settings_compare_as_recorded(tmp_path):
    """A resumed run with the same settings passes even where they hold tuples (the JSON
    record holds lists); a changed value is named."""
    from diffrep.config import check_resumed_settings

    url = str(tmp_path / "plan.json")
    settings = {"match": {"region_scales": (0.5, 0.75), "k": 5}, "num_prompts": 12}
    check_resumed_settings(url, settings, "scan", "r")
    check_resumed_settings(url, settings, "scan", "r")
    with pytest.raises(ConfigError, match=r"\(match differ"):
        check_resumed_settings(url, {**settings, "match": {"region_scales": (0.5,), "k": 5}}, "scan", "r")
