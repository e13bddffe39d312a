"""Embed WebDataset shards with copy-detection descriptors (SSCD, CLIP, DINO) on Ray.

Writes <root>/embeddings/<model>/{img_emb,metadata,stats}/<shard>.{npy,parquet,json};
a shard's stats file is written last and marks it complete, so a resubmitted job skips
finished shards. Run: diffrep embed --config configs/demo.yaml [--key value ...]
"""

from diffrep.embed.config import EmbedConfig
from diffrep.embed.run import run_embed
from diffrep.runner import Job

JOB = Job("embed", EmbedConfig, run_embed, __doc__)
main = JOB.main
