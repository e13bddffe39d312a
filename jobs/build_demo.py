"""Build the embedded default corpus (real photos + planted near-duplicates).

Run: python -m jobs.build_demo --config configs/demo.yaml
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from diffrep import storage
from diffrep.config import ConfigError, load_job_config
from diffrep.data.demo import build_demo_corpus
from diffrep.logs import setup_logging


@dataclass
class BuildDemoConfig:
    out_dir: str = field(default="data/demo/corpus", metadata={"help": "where the corpus goes"})
    num_shards: int = field(default=4, metadata={"help": "number of WebDataset shards"})
    duplicates_per_source: float = field(default=1.0, metadata={
        "help": "planted near-duplicates per source photo, on average"})
    seed: int = field(default=0, metadata={"help": "seed of transforms, captions and order"})
    use_opencv_doc: bool = field(default=True, metadata={
        "help": "also use Debian opencv-doc's photos when installed"})
    bad_samples: bool = field(default=True, metadata={
        "help": "add samples the embed job must skip and count (truncated JPEG, no image)"})
    overwrite: bool = field(default=False, metadata={"help": "rebuild even if the corpus exists"})


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(BuildDemoConfig, "build_demo", argv, description=__doc__)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    manifest_url = storage.join(cfg.out_dir, "manifest.json")
    if storage.exists(manifest_url) and not cfg.overwrite:
        manifest = storage.read_json(manifest_url)
        log.info("build_demo: corpus exists at %s (%d samples); --overwrite true rebuilds",
                 cfg.out_dir, manifest["num_good_samples"])
        return 0
    manifest = build_demo_corpus(cfg.out_dir, cfg.num_shards, cfg.duplicates_per_source,
                                 cfg.seed, cfg.use_opencv_doc, cfg.bad_samples)
    log.info("build_demo: %d source photos, %d planted near-duplicates, %d samples in %d shards "
             "under %s", manifest["num_sources"], manifest["num_planted_duplicates"],
             manifest["num_good_samples"], manifest["num_shards"], cfg.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
