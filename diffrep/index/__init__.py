"""Index build: autofaiss-chosen IVF indexes, trained on a sample, filled in parallel,
merged into K memory-mappable shards with an id map and a sha256 manifest."""
