"""Finding and safely loading model weights.

A weights spec is one of:
  "random"                         random initialisation (must be asked for explicitly)
  "pretrained" / "pretrained:TAG"  the library's own pretrained weights (timm / open_clip),
                                   from the local Hugging Face cache or the hub
  "/local/path.safetensors"        safetensors state dict
  "/local/path.pt|.pth|.bin"       torch state dict, loaded with weights_only=True
  "https://host/file#sha256=HEX"   downloaded once into the cache, verified by sha256
  {"path"|"url": ..., "sha256": HEX, "format": "torchscript"|"safetensors"|"torch"|"onnx"}

TorchScript executes code from the file, so it is only loaded when the file's sha256
matches the one the config pins. Nothing is ever unpickled with weights_only=False.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CACHE_DIR = Path(os.environ.get("DIFFREP_CACHE", Path.home() / ".cache" / "diffrep" / "weights"))


class WeightsError(ValueError):
    """Weights missing, unverifiable or in an unsafe format; the message says the fix."""


@dataclass(frozen=True)
class WeightsSpec:
    kind: str  # "random" | "pretrained" | "file" | "url"
    location: str = ""
    sha256: str | None = None
    format: str | None = None  # torchscript | safetensors | torch | onnx (None: by suffix)
    tag: str | None = None  # pretrained tag

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        loc = self.location.split("#", 1)[0].lower()
        if loc.endswith(".safetensors"):
            return "safetensors"
        if loc.endswith(".onnx"):
            return "onnx"
        if loc.endswith(".torchscript.pt") or loc.endswith(".torchscript"):
            return "torchscript"
        return "torch"


def parse_weights(spec: Any, model: str) -> WeightsSpec:
    """Parse a weights spec (see module docstring); `model` names the model in errors."""
    if spec is None:
        raise WeightsError(
            f"model {model!r} has no weights: set weights.{model} to a local file, a URL "
            "with #sha256=..., 'pretrained' (library weights from the HF cache) or 'random'"
        )
    if isinstance(spec, dict):
        unknown = set(spec) - {"path", "url", "sha256", "format"}
        if unknown or not (spec.get("path") or spec.get("url")):
            raise WeightsError(
                f"weights.{model}: expected keys path|url, sha256, format; got {sorted(spec)}"
            )
        kind = "url" if spec.get("url") else "file"
        fmt = spec.get("format")
        if fmt not in (None, "torchscript", "safetensors", "torch", "onnx"):
            raise WeightsError(f"weights.{model}.format {fmt!r}: use torchscript, safetensors, torch or onnx")
        return WeightsSpec(kind, spec.get("url") or str(spec["path"]), spec.get("sha256"), fmt)
    spec = str(spec)
    if spec == "random":
        return WeightsSpec("random")
    if spec == "pretrained" or spec.startswith("pretrained:"):
        return WeightsSpec("pretrained", tag=spec.partition(":")[2] or None)
    if "://" in spec:
        url, _, fragment = spec.partition("#")
        sha = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        return WeightsSpec("url", url, sha)
    return WeightsSpec("file", spec)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_file(spec: WeightsSpec, model: str) -> Path:
    """Return a local file for a file or URL spec, downloading and verifying URLs.

    URLs must be pinned by sha256; TorchScript files must be pinned wherever they are.
    """
    if spec.kind not in ("file", "url"):
        raise WeightsError(f"weights.{model}: {spec.kind} weights are not a file")
    if spec.file_format == "torchscript" and not spec.sha256:
        raise WeightsError(
            f"weights.{model}: TorchScript runs code from the file, so it needs a pinned "
            "sha256 (add sha256: <hex>; compute it once with `sha256sum FILE`)"
        )
    if spec.kind == "url":
        if not spec.sha256:
            raise WeightsError(f"weights.{model}: URL {spec.location} needs #sha256=<hex> to be trusted")
        path = CACHE_DIR / spec.sha256 / spec.location.rsplit("/", 1)[-1]
        if not path.exists():
            _download(spec.location, path, model)
    else:
        path = Path(spec.location).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights.{model}: file {path} does not exist or is not readable")
    if spec.sha256:
        actual = sha256_of(path)
        if actual != spec.sha256.lower():
            raise WeightsError(
                f"weights.{model}: {path} has sha256 {actual}, the config pins {spec.sha256}: "
                "the file is corrupt or not the one you meant"
            )
    return path


def _download(url: str, path: Path, model: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        raise WeightsError(
            f"weights.{model}: cannot download {url} ({exc}); download it yourself and give "
            "the local path"
        ) from None
    os.replace(tmp, path)


def load_state_dict(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """Load a state dict safely: safetensors, or torch.load(weights_only=True).

    Unwraps the usual containers ({"state_dict": ...}, {"model": ...}) and strips a
    DistributedDataParallel "module." prefix.
    """
    if fmt == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    elif fmt == "torch":
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError and friends
            raise WeightsError(
                f"{path} is not a plain tensor checkpoint ({type(exc).__name__}); only "
                "weights_only loading is allowed: convert it to safetensors"
            ) from None
    else:
        raise WeightsError(f"{path}: format {fmt!r} is not a state dict")
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(
    module: torch.nn.Module, path: Path, fmt: str, model: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Load a state dict into `module`, refusing missing or unexpected keys (keys under
    `ignore_prefixes`, e.g. a classifier head the embedder drops, are left out)."""
    state = load_state_dict(path, fmt)
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"weights.{model}: {path} does not fit the model: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
