"""The testbed's captioned training sets, cut from the photos that pip-installed packages
ship (diffrep.data.demo.load_source_photos without opencv-doc: scikit-image's and
scikit-learn's 19 photos), so the pool does not depend on an optional Debian package.

One pool of distinct 32x32 RGB images (uint8) is cut first; both models' training sets
index into it:

- memorized: `num_memorized` crops, each with one fixed caption, repeated
  `memorized_repeats` times in model A's set (like LAION's most duplicated captions);
  design label MV (matching verbatim);
- template family: one base crop whose bottom-right quadrant (16x16 px) is replaced by
  `template_variants` different crops, captions "<family> poster, variant NN", each
  repeated `template_repeats` times in model A's set; design label TV (template verbatim);
- once-seen: distinct crops with distinct captions, seen once ("none").

Model A ("memorizing"): memorized (repeated) + template family (repeated) + the first
`once_a` once-seen images. Model B ("large data"): every pool image exactly once, the
memorized and template images included, plus more once-seen images (`once_b` in all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32  # image side, pixels
QUADRANT = SIDE // 2  # the template's varying region: bottom-right QUADRANT x QUADRANT


@dataclass
class DataConfig:
    """Sizes of the testbed's training sets (counts of images / repeats)."""

    seed: int = 0
    num_memorized: int = 12
    memorized_repeats: int = 64
    template_variants: int = 16
    template_repeats: int = 8
    once_a: int = 1500
    once_b: int = 4000
    min_crop: int = 48  # smallest crop side cut from a photo before resizing, pixels
    min_std: float = 0.12  # crops flatter than this (pixel std in [0, 1]) are redrawn

    def special(self) -> int:
        """Distinct images A repeats (memorized and template)."""
        return self.num_memorized + self.template_variants


@dataclass
class Entry:
    """One distinct training image of the pool."""

    index: int
    caption: str
    source: str
    kind: str  # memorized | template | once
    box: tuple[int, int, int, int]  # crop box in the source photo (left, top, right, bottom),
    # before the rotation, mirroring and channel permutation


def _crop(photo: Image.Image, rng: np.random.Generator, min_crop: int, min_std: float = 0.0,
          ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A random square crop resized to SIDE, rotated by a multiple of 90 degrees, maybe
    mirrored, its colour channels permuted (so crops of one photo differ in pixels), with
    a pixel standard deviation >= min_std (in [0, 1]; flat crops are redrawn, up to 50
    times, then the most contrasted draw is kept)."""
    w, h = photo.size
    best: tuple[float, np.ndarray, tuple[int, int, int, int]] | None = None
    for _ in range(50):
        side = int(rng.integers(min_crop, min(w, h) + 1))
        left = int(rng.integers(0, w - side + 1))
        top = int(rng.integers(0, h - side + 1))
        box = (left, top, left + side, top + side)
        img = np.asarray(photo.crop(box).resize((SIDE, SIDE), Image.Resampling.BOX), np.uint8)
        img = np.rot90(img, int(rng.integers(4)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.ascontiguousarray(img[..., rng.permutation(3)])
        std = float(img.std()) / 255
        if std >= min_std:
            return img, box
        if best is None or std > best[0]:
            best = (std, img, box)
    assert best is not None
    return best[1], best[2]


def build_pool(cfg: DataConfig) -> tuple[np.ndarray, list[Entry]]:
    """(images (N, 32, 32, 3) uint8, entries): memorized first, then the template family,
    then once-seen images. Deterministic in cfg.seed and the installed photos."""
    from diffrep.data.demo import load_source_photos

    photos = {k: v.convert("RGB") for k, v in sorted(load_source_photos(use_opencv_doc=False).items())}
    names = list(photos)
    rng = np.random.default_rng(cfg.seed)
    images: list[np.ndarray] = []
    entries: list[Entry] = []

    def add(img: np.ndarray, caption: str, source: str, kind: str, box) -> None:
        entries.append(Entry(len(images), caption, source, kind, tuple(int(b) for b in box)))
        images.append(img)

    mem_sources = rng.permutation(len(names))[: cfg.num_memorized]
    for k, s in enumerate(mem_sources):
        name = names[int(s) % len(names)]
        img, box = _crop(photos[name], rng, max(cfg.min_crop, 96), 0.2)
        add(img, f"the famous {name.replace('_', ' ')} print number {k:02d}", name, "memorized", box)

    family = names[int(rng.integers(len(names)))]
    base, base_box = _crop(photos[family], rng, 96, 0.2)
    for v in range(cfg.template_variants):
        other = names[int(rng.integers(len(names)))]
        patch, _ = _crop(photos[other], rng, cfg.min_crop, cfg.min_std)
        img = base.copy()
        img[QUADRANT:, QUADRANT:] = np.asarray(
            Image.fromarray(patch).resize((QUADRANT, QUADRANT), Image.Resampling.BOX))
        add(img, f"{family.replace('_', ' ')} poster, variant {v:02d}", family, "template", base_box)

    num_once = max(cfg.once_a, cfg.once_b) - cfg.num_memorized - cfg.template_variants
    for i in range(num_once):
        name = names[int(rng.integers(len(names)))]
        img, box = _crop(photos[name], rng, cfg.min_crop, cfg.min_std)
        add(img, f"photo {i:04d} of {name.replace('_', ' ')}",
            name, "once", box)
    return np.stack(images), entries


def training_rows(cfg: DataConfig, entries: list[Entry], model: str) -> list[tuple[int, int]]:
    """(pool index, repeats) of model "A" or "B"'s training set."""
    special = [e for e in entries if e.kind != "once"]
    once = [e for e in entries if e.kind == "once"]
    if model == "A":
        rows = [(e.index, cfg.memorized_repeats if e.kind == "memorized" else cfg.template_repeats)
                for e in special]
        return rows + [(e.index, 1) for e in once[: cfg.once_a - len(special)]]
    if model == "B":
        return [(e.index, 1) for e in special + once[: cfg.once_b - len(special)]]
    raise ValueError(f"model must be 'A' or 'B', not {model!r}")


def truth_rows(entries: list[Entry], rows: list[tuple[int, int]], model: str) -> list[dict]:
    """The design truth of one model's captions: memorized (bool) and verbatim type
    (MV: repeated memorized image, TV: template family, none: seen once)."""
    out = []
    for index, repeats in rows:
        e = entries[index]
        memorized = model == "A" and e.kind != "once"
        vtype = {"memorized": "MV", "template": "TV"}.get(e.kind, "none") if memorized else "none"
        out.append({"caption": e.caption, "index": index, "kind": e.kind, "repeats": repeats,
                    "memorized": memorized, "verbatim_type": vtype})
    return out


def read_pool(testbed_dir: str | Path) -> tuple[np.ndarray, list[dict]]:
    """The pool's images (N, side, side, 3) uint8 and its entries (dicts); written by
    diffrep.testbed.build.write_dataset."""
    d = Path(testbed_dir)
    images = np.load(d / "images.npz")["images"]
    return images, json.loads((d / "pool.json").read_text())["entries"]


def read_truth(model_dir: str | Path) -> list[dict]:
    """A model's truth.json rows (caption, index, kind, repeats, memorized, verbatim_type)."""
    return json.loads((Path(model_dir) / "truth.json").read_text())["captions"]
