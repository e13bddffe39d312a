"""Write the memorization testbed's training set as a corpus (diffrep.testbed.corpus):
WebDataset shards that embed / build_index / scan / dcs read unchanged, and a scan prompt
file of the memorized, template and some once-seen captions with their source keys.

Run: diffrep build_testbed_corpus --config configs/demo-testbed.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffrep import storage
from diffrep.config import ConfigError, helps
from diffrep.runner import Job, JobContext


@dataclass
class TestbedCorpusConfig:
    testbed: str = field(default="testbed", metadata=helps("the testbed folder (data/ inside)"))
    memorizing: str = field(default="testbed/memorizing", metadata=helps(
        "the memorizing model's pipeline folder; its testbed/truth.json names the images"))
    out_dir: str = field(default="data/demo/testbed/corpus", metadata=helps("where the corpus goes"))
    num_shards: int = field(default=2, metadata=helps("number of WebDataset shards"))
    once_prompts: int = field(default=20, metadata=helps(
        "once-seen captions added to the scan prompts, beside every memorized one"))
    once_images: int | None = field(default=None, metadata=helps(
        "keep only this many once-seen images (every memorized and template image is kept); "
        "null keeps all"))
    seed: int = field(default=0, metadata=helps("seed of the once-seen image and prompt draws"))
    overwrite: bool = field(default=False, metadata=helps("rebuild even if the corpus exists"))


def run(cfg: TestbedCorpusConfig, ctx: JobContext) -> str | None:
    log = ctx.log
    if cfg.num_shards < 1 or cfg.once_prompts < 0 or (cfg.once_images or 0) < 0:
        raise ConfigError("build_testbed_corpus.num_shards must be >= 1, "
                          "build_testbed_corpus.once_prompts and once_images >= 0")
    if not storage.exists(storage.join(cfg.memorizing, "testbed", "truth.json")):
        raise ConfigError(f"build_testbed_corpus.memorizing: no testbed/truth.json under "
                          f"{cfg.memorizing} (train it with `make testbed`)")
    from diffrep.testbed.corpus import write_testbed_corpus

    manifest_url = storage.join(cfg.out_dir, "manifest.json")
    if storage.exists(manifest_url) and not cfg.overwrite:
        manifest = storage.read_json(manifest_url)
        log.info("build_testbed_corpus: exists at %s (%d samples); --overwrite true rebuilds",
                 cfg.out_dir, manifest["num_samples"])
        return None
    manifest = write_testbed_corpus(cfg.testbed, cfg.memorizing, cfg.out_dir, cfg.num_shards,
                                    cfg.once_prompts, cfg.seed, cfg.once_images)
    log.info("build_testbed_corpus: %d images in %d shards, %d scan prompts (%d memorized or "
             "template) under %s", manifest["num_samples"], manifest["num_shards"],
             manifest["num_prompts"], manifest["num_memorized_prompts"], cfg.out_dir)
    return f"corpus under {cfg.out_dir}"


JOB = Job("build_testbed_corpus", TestbedCorpusConfig, run, __doc__)
main = JOB.main
