"""A tiny text-conditional latent diffusion testbed whose memorized captions are known:
a captioned training set cut from the photos the project ships (data), the recipe that
trains a VAE and two UNets on it (train), generation-based verification (verify) and the
memorization-detector benchmark (detect)."""
