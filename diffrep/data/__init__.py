"""Reading training data: WebDataset shards, images, captions; the demo corpus."""
