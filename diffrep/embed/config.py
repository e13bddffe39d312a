"""The embed job's typed config and its validation (run before any work starts)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from diffrep import storage
from diffrep.config import ConfigError, RunSettings, helps
from diffrep.data.images import DEFAULT_MAX_PIXELS
from diffrep.data.shards import check_shards, expand_shards
from diffrep.models import check_model_name, default_weights
from diffrep.models.sscd_onnx import PACKAGED_ONNX, packaged_onnx_file
from diffrep.models.weights import WeightsError, parse_weights, resolve_file


@dataclass
class EmbedConfig(RunSettings):
    RENAMED: ClassVar[dict[str, str]] = {
        "actors": "workers", "cpus_per_actor": "cpus_per_worker",
        "max_shard_attempts": "max_attempts", "dtype": "storage_dtype"}

    input: str | list[str] = field(metadata=helps(
        "input WebDataset shards: path/URL, brace pattern ({00000..00099}) or glob; or a list"))
    models: list[str] = field(default_factory=lambda: ["sscd_onnx"], metadata=helps(
        "embedders to run in one pass over the data (see diffrep.models)"))
    weights: dict[str, Any] = field(default_factory=dict, metadata=helps(
        "per model: local file, URL#sha256=..., 'pretrained[:tag]' or 'random'"))
    model_options: dict[str, dict] = field(default_factory=dict, metadata=helps(
        "per model keyword options, e.g. {sscd_onnx: {resize: short288}}"))
    storage_dtype: Literal["float16", "float32"] = field(default="float16", metadata=helps(
        "precision of the stored embeddings"))
    batch_size: int = field(default=64, metadata=helps("images per model call"))
    device: str = field(default="auto", metadata=helps(
        "auto (one GPU per actor when the cluster has GPUs), cpu or cuda"))
    workers: int | Literal["auto"] = field(default="auto", metadata=helps(
        "number of embedding actors; auto: one per GPU, or per node CPUs // cpus_per_worker; "
        "fewer (WARNING) when they do not fit the cluster"))
    cpus_per_worker: int = field(default=2, metadata=helps(
        "CPUs reserved per embedding actor (model threads on CPU; decode threads on GPU "
        "nodes); at most the largest node's CPUs (per GPU on GPU nodes)"))
    decode_threads: int = field(default=0, metadata=helps(
        "JPEG decode + resize threads per actor; 0: cpus_per_worker"))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=helps(
        "images with more pixels are skipped as decompression_bomb (checked before decode)"))
    save_tokens: bool = field(default=False, metadata=helps(
        "also write patch tokens (img_tokens/) for token models (split-product); a shard's "
        "tokens are held in memory: ~300 KB per image for ViT-B/16, so for query sets, "
        "not 10k-image LAION shards"))

    def weights_for(self, model: str) -> Any:
        return self.weights.get(model, default_weights(model))

    def shard_urls(self) -> list[str]:
        return expand_shards(self.input)


def validate(cfg: EmbedConfig) -> list[str]:
    """Check everything that can be checked before work starts; returns the shard URLs.

    Raises ConfigError listing every problem, each naming the key or file and the fix.
    """
    errors: list[str] = []
    if not cfg.models:
        errors.append("embed.models is empty: name at least one model, e.g. [sscd_onnx]")
    if len(set(cfg.models)) != len(cfg.models):
        errors.append(f"embed.models lists a model twice: {cfg.models}")
    for key in ("batch_size", "cpus_per_worker", "max_pixels", "max_attempts"):
        if getattr(cfg, key) < 1:
            errors.append(f"embed.{key} must be >= 1")
    if cfg.decode_threads < 0:
        errors.append("embed.decode_threads must be >= 0")
    if isinstance(cfg.workers, int) and cfg.workers < 1:
        errors.append("embed.workers must be >= 1 or auto")
    for name in list(cfg.weights) + list(cfg.model_options):
        if name not in cfg.models:
            errors.append(f"embed.weights/model_options name {name!r}, which is not in embed.models")
    for model in cfg.models:
        try:
            check_model_name(model)
            spec = parse_weights(cfg.weights_for(model), model)
            if spec.kind == "file":
                resolve_file(spec, model)  # exists, readable, sha256 when pinned
            elif spec.kind == "url" and not spec.sha256:
                raise WeightsError(f"weights.{model}: URL {spec.location} needs #sha256=<hex>")
            elif spec.kind == "pretrained" and model in PACKAGED_ONNX:
                packaged_onnx_file(model)
        except (ValueError, WeightsError) as exc:
            errors.append(str(exc))
    try:
        urls = cfg.shard_urls()
    except (OSError, ValueError) as exc:
        urls = []
        errors.append(f"embed.input {cfg.input!r}: {exc}")
    if not urls and not any("embed.input" in e for e in errors):
        errors.append(f"embed.input {cfg.input!r} matches no shard")
    errors.extend(f"embed.input: {e}" for e in check_shards(urls))
    errors.extend(_check_writable(cfg.root))
    if errors:
        raise ConfigError("invalid embed config:\n  - " + "\n  - ".join(errors))
    return urls


def _check_writable(root: str) -> list[str]:
    probe = storage.join(root, f".write-probe-{uuid.uuid4().hex}")
    try:
        storage.write_bytes(probe, b"ok")
        fs, path = storage.filesystem(probe)
        fs.rm(path)
    except OSError as exc:
        return [f"root {root!r} is not writable ({exc}): choose another output root with --root"]
    return []
