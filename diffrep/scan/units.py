"""A scan's work units: a batch of prompts for one checkpoint, or a batch of already
generated images. A unit is the resume granularity: its parquet, tar and marker."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image

from diffrep.data.images import SkipSample, decode_image
from diffrep.data.reader import IMAGE_EXTS, decode_caption, iter_raw_samples
from diffrep.data.shards import expand_shards
from diffrep.search.queries import list_images


@dataclass
class ScanUnit:
    """`label`: the checkpoint's (or generated set's) output name; `unit`: its number.
    `prompts`: rows (prompt_id, prompt, source_key, source_id) to generate from, or
    `sources`: image files / one tar url holding generated images."""

    label: str
    unit: int
    prompts: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.label}/{self.unit:05d}"


@dataclass
class GivenImage:
    """An already generated image with what is known of its making."""

    name: str
    image: Image.Image
    prompt: str | None
    provenance: dict


def plan_prompt_units(label: str, prompts: list[dict], per_unit: int) -> list[ScanUnit]:
    return [ScanUnit(label, i // per_unit, prompts=prompts[i:i + per_unit])
            for i in range(0, len(prompts), per_unit)]


def plan_given_units(label: str, spec: str, per_unit: int) -> list[ScanUnit]:
    """A folder: `per_unit` image files per unit (sorted). Tars: one unit per tar."""
    if os.path.isdir(spec):
        paths = list_images(spec)
        return [ScanUnit(label, i // per_unit, sources=paths[i:i + per_unit])
                for i in range(0, len(paths), per_unit)]
    return [ScanUnit(label, i, sources=[url]) for i, url in enumerate(expand_shards(spec))]


def _sidecar(path: str, ext: str) -> bytes | None:
    side = os.path.splitext(path)[0] + ext
    if os.path.exists(side):
        with open(side, "rb") as f:
            return f.read()
    return None


def _provenance(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        obj = json.loads(data)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def read_given(unit: ScanUnit, counts: Counter) -> list[GivenImage]:
    """The unit's generated images with prompts (a .txt beside each image, or the
    sample's txt member, else the json's "prompt"); undecodable ones are counted and left out."""
    out: list[GivenImage] = []
    for name, data, txt, meta in _raw_given(unit, counts):
        try:
            image = decode_image(data).image
        except SkipSample as exc:
            counts[exc.reason] += 1
            continue
        provenance = _provenance(meta)
        prompt = (decode_caption(txt)[0] if txt is not None else None) or provenance.get("prompt")
        if not prompt:  # kept and matched (matching needs no prompt), so not a skip
            counts["note:no_prompt"] += 1
        out.append(GivenImage(name, image, prompt or None, provenance))
    return out


def _raw_given(unit: ScanUnit, counts: Counter):
    """(name, image bytes, prompt bytes or None, provenance bytes or None) per image."""
    if len(unit.sources) == 1 and unit.sources[0].endswith(".tar"):
        for raw in iter_raw_samples(unit.sources[0], counts):
            ext = next((e for e in IMAGE_EXTS if e in raw.members), None)
            if ext is None:
                counts["missing_image"] += 1
                continue
            yield raw.key, raw.members[ext], raw.members.get("txt"), raw.members.get("json")
        return
    for path in unit.sources:
        with open(path, "rb") as f:
            data = f.read()
        yield os.path.basename(path), data, _sidecar(path, ".txt"), _sidecar(path, ".json")
