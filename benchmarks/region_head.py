"""Can a projection trained for partial copies lift segmix above the nulls? (A benchmark,
not a test: figures printed and written to JSON; nothing here is used by the jobs.)

Pooled region descriptors (diffrep.models.pooled) are SSCD's own head (GeM, then a 2048 ->
512 projection) applied to a box of the feature map. SSCD was trained on whole-image
copies; segmix copies (an irregular, augmented part of a photo pasted into another) score a
median 0.49 against their source, under the nulls. Here the projection is re-trained on
frozen feature maps, starting from SSCD's and held near it, so that a copied region's best
region pair with its source beats every unrelated image's (a multiple-instance softmax over
the training images, temperature `--temperature`).

Honest split: the photos are halved by name. The projection trains on copies of half B's
gallery images only (copybench's own generators, other seeds: segmix, cutmix and plain
copies), so its figures are an upper bound of what a head trained on a generic copy
augmentation would give on copybench. It is evaluated on half A, exactly as
benchmarks/region_background.py does (`fair`): copybench's seed-0 copies whose source is in
half A against half A's images; nulls: half A's images against A's other photos, drawn
novel scenes, and each copy against A's images it holds nothing of. Regions: the pooled
grid of the 480 px map (147 boxes, the whole image included; no segment crops), for the
baseline and the trained head alike.

Run: python -m benchmarks.region_head --out benchmarks/results/region-head.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import write_results
from benchmarks.region_background import COPY_SETS, VARIANTS, copy_set, photo_split
from benchmarks.region_background import evaluate as background_evaluate


def pooled(embedder, images: list, boxes: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, R, 512) SSCD's pooled descriptors and (N, R, C) the GeM-pooled features before
    the projection (L2-normalised) of `boxes` on each image's map; blank boxes (grey-level
    deviation under RegionSpec.min_std, as the jobs skip them; the whole image never) are
    zero in both."""
    from diffrep.search.regions import RegionSpec, box_stds

    head = embedder.gem_head()
    proj, raw = [], []
    for start in range(0, len(images), 16):
        chunk = images[start:start + 16]
        for image, fmap in zip(chunk, embedder.feature_maps(chunk, side), strict=True):
            keep = box_stds(image.convert("RGB"), boxes) >= RegionSpec.min_std
            keep[0] = True
            gem = head.gem(fmap, boxes)
            proj.append(head.pool(fmap, boxes) * keep[:, None])
            raw.append((gem / np.maximum(np.linalg.norm(gem, axis=1, keepdims=True), 1e-12)
                        * keep[:, None]).astype(np.float16))
    return np.stack(proj), np.stack(raw)


def train_head(raw_train: np.ndarray, raw_copies: np.ndarray, sources: np.ndarray, related: np.ndarray,
               weight: np.ndarray, bias: np.ndarray, epochs: int, temperature: float, anchor: float,
               lr: float, seed: int, on_epoch=None) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The projection (weight (d, C), bias (d,)) trained from `weight`, `bias`: for each copy
    (regions raw_copies[i] (R, C)), its source's score (best region pair) against every
    unrelated training image's, softmax at `temperature`; `related` (copies, images) bool:
    images that are not negatives (the source's photo and the mixed-in one)."""
    import torch

    torch.manual_seed(seed)
    w0, b0 = torch.tensor(weight), torch.tensor(bias)
    w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
    opt = torch.optim.Adam([w, b], lr=lr)
    train = torch.tensor(raw_train, dtype=torch.float32)
    copies = torch.tensor(raw_copies, dtype=torch.float32)
    src, rel = torch.tensor(sources), torch.tensor(related)
    n_img, n_reg, _ = train.shape
    train_flat = train.reshape(-1, train.shape[-1])
    train_kept = (train_flat.abs().sum(1, keepdim=True) > 0).float()  # blank regions stay zero
    copies_kept = (copies.abs().sum(2, keepdim=True) > 0).float()
    losses = []
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order, total = torch.randperm(len(copies), generator=gen), 0.0
        for start in range(0, len(order), 32):
            idx = order[start:start + 32]
            t = torch.nn.functional.normalize(train_flat @ w.T + b, dim=1) * train_kept
            q = torch.nn.functional.normalize(copies[idx] @ w.T + b, dim=2) * copies_kept[idx]
            sims = torch.einsum("qrd,nd->qrn", q, t).reshape(len(idx), n_reg, n_img, n_reg)
            scores = sims.amax(dim=(1, 3))  # (batch, images): best region pair
            mask = rel[idx].clone()
            mask[torch.arange(len(idx)), src[idx]] = False
            logits = (scores / temperature).masked_fill(mask, float("-inf"))
            loss = torch.nn.functional.cross_entropy(logits, src[idx]) + anchor * ((w - w0) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(round(total / len(copies), 4))
        print(f"  epoch {len(losses)}: loss {losses[-1]}", flush=True)
        if on_epoch is not None:
            on_epoch(len(losses), w.detach().numpy(), b.detach().numpy())
    return w.detach().numpy(), b.detach().numpy(), losses


def project(raw: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Descriptors of raw pooled features under (weight, bias); blank (zero) rows stay zero."""
    out = raw.astype(np.float32) @ weight.T + bias
    out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out * (np.abs(raw).sum(-1, keepdims=True) > 0)


def evaluate(vectors: dict, groups: np.ndarray, half_b: np.ndarray) -> dict:
    """Found above the largest null (and its 99th percentile) per copy set, on half A:
    region_background's fair split with no normalisation."""
    out = background_evaluate({**vectors, "groups": groups, "half_b": half_b}, VARIANTS[0])
    return {k: out[k] for k in ("nulls", "largest_null", "null_p99", "sets")}


def main() -> None:
    from diffrep.models import create_embedder, default_weights
    from diffrep.search.regions import POOLED_SCALES, RegionSpec
    from diffrep.synthetic import drawn_scene

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results/region-head.json")
    parser.add_argument("--model", default="sscd_onnx")
    parser.add_argument("--side", type=int, default=480, help="feature map side, px (the jobs' pooled_side)")
    parser.add_argument("--train_seeds", type=int, default=6, help="copy sets of half B per kind")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--anchor", type=float, default=1e-3, help="weight of |W - W_sscd|^2")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--novel", type=int, default=40)
    args = parser.parse_args()
    t0 = time.perf_counter()
    embedder = create_embedder(args.model, weights=default_weights(args.model))
    boxes = RegionSpec(scales=POOLED_SCALES).boxes()
    gallery, groups, half_b = photo_split(0)
    proj, raw = {}, {}
    proj["gallery"], raw["gallery"] = pooled(embedder, [g.image for g in gallery], boxes, args.side)
    proj["novel"], raw["novel"] = pooled(embedder, [drawn_scene(700 + i) for i in range(args.novel)], boxes,
                                         args.side)
    for set_name in COPY_SETS:
        images, sources, others = copy_set(gallery, set_name, 0)
        v, raw[set_name] = pooled(embedder, images, boxes, args.side)
        proj[set_name] = (v, sources, others)
    # training copies: half B only, other seeds
    b_items = [g for g, in_b in zip(gallery, half_b, strict=True) if in_b]
    b_groups = groups[half_b]
    train_images, train_src, train_related = [], [], []
    for seed in range(1, args.train_seeds + 1):
        for set_name in COPY_SETS:
            images, sources, others = copy_set(b_items, set_name, seed)
            train_images += images
            train_src += sources.tolist()
            train_related += [(b_groups == b_groups[s]) | (b_groups == o) for s, o in zip(sources, others, strict=True)]
    _, raw_copies = pooled(embedder, train_images, boxes, args.side)
    t_embed = time.perf_counter() - t0
    head = embedder.gem_head()

    def trained(weight: np.ndarray, bias: np.ndarray) -> dict:
        out = {k: project(raw[k], weight, bias) for k in ("gallery", "novel")}
        for set_name in COPY_SETS:
            out[set_name] = (project(raw[set_name], weight, bias), *proj[set_name][1:])
        return out

    by_epoch = {}

    def checkpoint(epoch: int, weight: np.ndarray, bias: np.ndarray) -> None:
        if epoch % 2 == 0:
            by_epoch[epoch] = evaluate(trained(weight, bias), groups, half_b)
            print(f"  epoch {epoch} on half A: {by_epoch[epoch]}", flush=True)

    weight, bias, losses = train_head(raw["gallery"][half_b], raw_copies, np.array(train_src),
                                      np.array(train_related), head.weight, head.bias, args.epochs,
                                      args.temperature, args.anchor, args.lr, 0, checkpoint)
    t_train = time.perf_counter() - t0 - t_embed
    results = {"model": args.model, "side": args.side, "regions_per_image": len(boxes),
               "half_a_images": int((~half_b).sum()), "half_b_images": int(half_b.sum()),
               "training_copies": len(train_images), "args": vars(args), "losses": losses,
               "embed_s": round(t_embed, 1), "train_s": round(t_train, 1),
               "sscd_head": evaluate(proj, groups, half_b), "trained_head": evaluate(trained(weight, bias), groups, half_b),
               "trained_head_by_epoch": by_epoch,
               "projection_change": round(float(np.linalg.norm(weight - head.weight) / np.linalg.norm(head.weight)), 4)}
    for k in ("sscd_head", "trained_head"):
        print(k, results[k], flush=True)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
