"""Scan inputs for the embedded default: a folder of "generated" images that holds planted
edited copies of training images, pasted-object copies (part of a training photo pasted as
an ellipse into a novel scene: object-level replication, paper 1 sec. 3) and novel images
(the ground truth is known), and tiny random-weight pipelines standing in for checkpoints.

Folder layout (what scan.generated reads): <name>.png, <name>.txt (the prompt),
<name>.json (provenance: planted, source_key, transform, box); truth.parquet lists them
all (box: where a pasted object lies, normalised x0, y0, x1, y1).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance

from diffrep.data.images import decode_image, encode_png
from diffrep.data.reader import iter_raw_samples
from diffrep.synthetic import drawn_scene, paste_object


def _downscale(img: Image.Image, rng: random.Random) -> Image.Image:
    scale = rng.uniform(0.8, 0.9)
    return img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.BICUBIC)


def _brighten(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(rng.uniform(1.08, 1.15))


def _contrast(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(rng.uniform(1.08, 1.15))


# Mild edits, as a model regurgitating a training image would make them. A copy is usually
# closer to its source than to the corpus's planted duplicates of that source, but not
# always (a colour-jittered duplicate can be nearer still): those are the same photo.
PLANTED_EDITS = {"downscale": _downscale, "brighten": _brighten, "contrast": _contrast}


def build_planted_generations(corpus_dir: str, out_dir: str, copies: int = 12, novel: int = 8,
                              seed: int = 0, pasted: int = 0) -> pa.Table:
    """Write `copies` mildly edited copies of source photos of the demo corpus, `pasted`
    pasted-object copies (part of a source photo in a novel scene) and `novel` drawn
    images, each with prompt and provenance; returns the truth table (name, planted,
    source_key, transform, box)."""
    rng = random.Random(seed)
    corpus = Path(corpus_dir)
    sources = set(pq.read_table(corpus / "duplicates.parquet")["source_key"].to_pylist())
    images: dict[str, tuple[Image.Image, str]] = {}
    for tar in sorted((corpus / "shards").glob("*.tar")):
        for raw in iter_raw_samples(str(tar), Counter()):
            if raw.key in sources and "jpg" in raw.members:
                images[raw.key] = (decode_image(raw.members["jpg"]).image,
                                   raw.members.get("txt", b"").decode())
    chosen = rng.sample(sorted(images), min(copies, len(images)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, list] = {"name": [], "planted": [], "source_key": [], "transform": [], "box": []}

    def write(name: str, img: Image.Image, prompt: str, meta: dict) -> None:
        (out / f"{name}.png").write_bytes(encode_png(img))
        (out / f"{name}.txt").write_text(prompt)
        (out / f"{name}.json").write_text(json.dumps(meta))
        for column in truth:
            truth[column].append(name if column == "name" else meta.get(column))

    for i, key in enumerate(chosen):
        img, caption = images[key]
        edit = list(PLANTED_EDITS)[i % len(PLANTED_EDITS)]
        write(f"copy_{i:03d}", PLANTED_EDITS[edit](img, rng), caption,
              {"planted": True, "source_key": key, "transform": edit})
    for i, key in enumerate(rng.sample(sorted(images), min(pasted, len(images)))):
        img, caption = images[key]
        scene = drawn_scene(seed * 1000 + 500 + i, size=384)
        copy, box = paste_object(img, scene, rng)
        write(f"pasted_{i:03d}", copy, f"{caption}, in a drawn scene",
              {"planted": True, "source_key": key, "transform": "pasted_object", "box": list(box)})
    for i in range(novel):
        write(f"novel_{i:03d}", drawn_scene(seed * 1000 + i), f"a drawing of shapes #{i}",
              {"planted": False, "source_key": None, "transform": None})
    table = pa.table(truth, schema=pa.schema([("name", pa.string()), ("planted", pa.bool_()),
                                              ("source_key", pa.string()), ("transform", pa.string()),
                                              ("box", pa.list_(pa.float32()))]))
    pq.write_table(table, out / "truth.parquet")
    return table
