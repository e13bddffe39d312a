"""Region descriptors pooled from one forward pass (R-MAC style: Tolias et al., "Particular
object retrieval with integral max-pooling of CNN activations", ICLR 2016).

SSCD's descriptor is a GeM pooling of its backbone's last feature map, a linear
projection and an L2 normalisation. Pooling the same feature map inside a box instead of
over the whole map, then projecting, gives that box a descriptor in the same space as
every global descriptor, without embedding a crop of it: one backbone pass serves every
region of an image, however many. Over the whole map it is the global descriptor itself
(tests/test_pooled.py checks the two agree).

The head (GeM exponent, clamp, projection) is read from the ONNX graph, found by its
pattern: [Reshape] -> Clip(eps) -> Pow(p) -> ReduceMean -> Pow(1/p) -> Gemm. A graph without
that pattern raises PooledRegionsUnsupported. Memory: one batch's feature maps (2048 x 10
x 10 float32 per image at 320 px, 0.8 MB), nothing that grows with a corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class PooledRegionsUnsupported(ValueError):
    """The model's graph does not end in a GeM pooling and a projection."""


@dataclass(frozen=True)
class GemHead:
    """GeM pooling (exponent `p`, activations clamped at `eps`) and the projection
    (`weight` (dim, C), `bias` (dim,)) of a descriptor network."""

    p: float
    eps: float
    weight: np.ndarray
    bias: np.ndarray

    def pool(self, fmap: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Descriptors (R, dim) float32, L2-normalised, of normalised `boxes` (R, 4) on one
        image's feature map (C, H, W): gem() of each box, then the projection."""
        proj = self.gem(fmap, boxes) @ self.weight.T + self.bias
        return (proj / np.maximum(np.linalg.norm(proj, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def gem(self, fmap: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(R, C) float32 GeM pooling of the feature map (C, H, W) inside each normalised box
        (R, 4), before the projection. A box covers the cells it overlaps (at least one)."""
        c, h, w = fmap.shape
        powered = np.clip(fmap, self.eps, None).astype(np.float32) ** self.p
        # integral image: any box's sum of cells in O(1)
        integral = np.zeros((c, h + 1, w + 1), np.float64)
        integral[:, 1:, 1:] = powered.cumsum(1).cumsum(2)
        out = np.empty((len(boxes), c), np.float32)
        # edges in cells, rounded first: a float32 box edge of 0.4 on 5 cells is 2.0000000298
        for i, (x0, y0, x1, y1) in enumerate(np.round(np.asarray(boxes, np.float64) * [w, h, w, h], 4)):
            c0, r0 = min(int(math.floor(x0)), w - 1), min(int(math.floor(y0)), h - 1)
            c1, r1 = max(int(math.ceil(x1)), c0 + 1), max(int(math.ceil(y1)), r0 + 1)
            total = integral[:, r1, c1] - integral[:, r0, c1] - integral[:, r1, c0] + integral[:, r0, c0]
            out[i] = np.maximum(total / ((r1 - r0) * (c1 - c0)), 0) ** (1.0 / self.p)
        return out


def _constant(name: str, initializers: dict, constants: dict, producer: dict) -> np.ndarray:
    """A constant tensor: an initializer, a Constant node's value, or a Cast of one (a
    float16 export stores its weights as float16 and casts them)."""
    if name in initializers:
        return initializers[name]
    if name in constants:
        return constants[name]
    node = producer.get(name)
    if node is not None and node.op_type == "Cast":
        return _constant(node.input[0], initializers, constants, producer).astype(np.float32)
    raise PooledRegionsUnsupported(f"no constant {name!r} in the graph")


def read_gem_head(model) -> tuple[str, GemHead]:
    """(name of the feature-map tensor, GemHead) of an onnx ModelProto whose descriptor is
    GeM + Gemm; raises PooledRegionsUnsupported otherwise."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    producer = {o: n for n in graph.node for o in n.output}

    def parent(node, op: str):
        p = producer.get(node.input[0])
        if p is None or p.op_type != op:
            raise PooledRegionsUnsupported(f"{node.name}: expected a {op} before it, found "
                                           f"{p.op_type if p is not None else 'an input'}")
        return p

    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    if not gemms:
        raise PooledRegionsUnsupported("no Gemm (projection) in the graph")
    gemm = gemms[-1]
    pow_inv = parent(gemm, "Pow")
    pow_p = parent(parent(pow_inv, "ReduceMean"), "Pow")
    root = parent(pow_p, "Clip")
    p = float(_constant(pow_p.input[1], initializers, constants, producer))
    inv_p = float(_constant(pow_inv.input[1], initializers, constants, producer))
    if not math.isclose(p * inv_p, 1.0, rel_tol=1e-4):
        raise PooledRegionsUnsupported(f"GeM exponents {p} and {inv_p} are not inverse")
    eps = float(_constant(root.input[1], initializers, constants, producer))
    feature = root.input[0]
    if feature in producer and producer[feature].op_type == "Reshape":  # (N, C, H*W) view of the map
        feature = producer[feature].input[0]
    attrs = {a.name: a for a in gemm.attribute}
    weight = _constant(gemm.input[1], initializers, constants, producer).astype(np.float32)
    if "transB" not in attrs or attrs["transB"].i == 0:
        weight = weight.T  # stored (C, dim): y = x @ W
    bias = (_constant(gemm.input[2], initializers, constants, producer).astype(np.float32)
            if len(gemm.input) > 2 else np.zeros(weight.shape[0], np.float32))
    return feature, GemHead(p, eps, weight, bias)


def with_output(model, tensor: str) -> bytes:
    """The serialized model with `tensor` added to its outputs (the model is copied)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return copy.SerializeToString()
