"""Every job's entry: one module per job, each declaring `JOB` (a diffrep.runner.Job) and
`main = JOB.main`. `diffrep <job>` and `python -m jobs.<job>` both run these."""

# name -> one-line description (listed by `diffrep --help` without importing the jobs)
JOBS: dict[str, str] = {
    "shards": "turn a folder of images into WebDataset shards (original bytes kept)",
    "download": "download a LAION-style parquet into WebDataset shards (img2dataset)",
    "embed": "embed WebDataset shards with copy-detection descriptors",
    "build_index": "build or extend the sharded IVF-PQ index of one model's embeddings",
    "search": "search the index with images or query embeddings",
    "dedup": "near-duplicate pairs, groups and a report of the training set",
    "scan": "memorization scan of diffusion checkpoints against the training set",
    "dcs": "rank training captions by DCS and label the top with ground truth",
    "serve": "browse, search and review a root's outputs in a browser; clip-retrieval's API",
    "copybench": "copy-detector benchmark (paper 1, Table 1)",
    "detectbench": "memorization-detector benchmark on captions with known labels",
    "build_demo": "build the embedded demo corpus and tiny pipelines",
    "build_testbed_corpus": "the memorization testbed's training set as WebDataset shards",
    "train_testbed": "train the memorization testbed's diffusion models",
    "verify_testbed": "verify the testbed models memorize what they should",
}
