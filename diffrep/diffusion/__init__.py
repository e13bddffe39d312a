"""Diffusion models: safe pipeline loading, tiny random pipelines, generation and scores."""
