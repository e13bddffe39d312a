"""Search an index with query embeddings or images; results as parquet.

One Ray actor per index shard (each verifies and memory-maps its shard), each query batch
sent only to the shards owning the IVF lists it probes, top-k merged, optionally re-ranked
exactly from the stored embeddings.
Run: diffrep search --config configs/demo.yaml [--images dir | --queries root]
"""

from diffrep.runner import Job
from diffrep.search.config import SearchConfig
from diffrep.search.run import run_search

JOB = Job("search", SearchConfig, run_search, __doc__)
main = JOB.main
