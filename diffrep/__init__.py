"""diffrep: find training-data replication in diffusion models at LAION scale."""

__version__ = "0.1.0"
