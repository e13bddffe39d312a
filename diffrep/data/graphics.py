"""A corpus that is not photos: icons, screenshots and diagrams, built offline from
installed files and seeded drawing, as a folder `diffrep shards` turns into WebDataset
shards. LAION holds many logos, icons and simple graphics; on such images region scores
between unrelated images run high (diffrep.search.calibration), and this corpus is where
that is measured and tested.

Sources (licences: the icons are Debian's adwaita-icon-theme, LGPL-3 / CC-BY-SA-3.0, read
from /usr/share at run time, never committed; the rest is drawn here):
- `icon`: Adwaita's full-colour 512 px icons and its symbolic 96 px glyphs (flattened over
  white, glyphs upscaled), when the theme is installed (Chromium pulls it in);
- `screenshot`: a drawn application window (title bar, sidebar, text lines, buttons);
- `diagram`: boxes joined by arrows, with labels.

`write_trial_queries` adds what a scan of such a corpus is asked: images unrelated to it
(held-out icons, flat drawings, drawn scenes) and corpus images pasted into drawn scenes.

Memory: one image at a time; the list of installed icon paths (hundreds).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from diffrep.synthetic import drawn_scene, flat_drawing, paste_object

ADWAITA = Path("/usr/share/icons/Adwaita")
SIDE = 256
KINDS = ("icon", "screenshot", "diagram")


def installed_icons() -> list[Path]:
    """Adwaita's distinct colour 512 px icons, then its distinct symbolic 96 px glyphs,
    sorted; [] when the theme is not installed. The theme ships the same picture under
    several names (aliases, right-to-left mirrors): only the first of each is kept, so no
    two icons here are copies of each other."""
    seen: set[bytes] = set()
    out = []
    for path in sorted(ADWAITA.glob("512x512/*/*.png")) + sorted(ADWAITA.glob("96x96/*/*.png")):
        img = load_icon(path, 32)
        h, mirrored = img.tobytes(), img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
        if h not in seen and mirrored not in seen:
            seen.add(h)
            out.append(path)
    return out


def load_icon(path: Path, side: int = SIDE) -> Image.Image:
    """An installed icon flattened over white (as diffrep.data.images does with
    transparency) at `side` px."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, "white")
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _words(rng: random.Random, n: int) -> str:
    vocab = ("file", "edit", "view", "open", "save", "data", "model", "index", "query", "report",
             "user", "shard", "table", "image", "scan", "merge", "split", "node", "cache", "job")
    return " ".join(rng.choice(vocab) for _ in range(n))


def screenshot(seed: int, side: int = SIDE) -> Image.Image:
    """A drawn application window: title bar, sidebar, lines of text and two buttons."""
    rng = random.Random(seed)
    accent = tuple(rng.randrange(40, 200) for _ in range(3))
    img = Image.new("RGB", (side, side), (246, 245, 244))
    d = ImageDraw.Draw(img)
    bar = side // 10
    d.rectangle((0, 0, side, bar), fill=accent)
    d.text((8, bar // 4), _words(rng, 2), fill="white", font=_font(bar // 2))
    sidebar = rng.randrange(side // 5, side // 3)
    d.rectangle((0, bar, sidebar, side), fill=(222, 221, 218))
    for y in range(bar + 8, side - 10, side // 12):
        d.text((6, y), _words(rng, 1), fill=(60, 60, 60), font=_font(side // 22))
    y = bar + 10
    while y < side * 3 // 4:
        d.text((sidebar + 8, y), _words(rng, rng.randrange(2, 5)), fill=(30, 30, 30),
               font=_font(side // 20))
        y += side // 14
    for i in range(2):
        x0 = side - (i + 1) * side // 4
        d.rounded_rectangle((x0, side - side // 8, x0 + side // 5, side - side // 30), 4,
                            fill=accent if i == 0 else (210, 210, 210))
    return img


def diagram(seed: int, side: int = SIDE) -> Image.Image:
    """Boxes with labels joined by arrows, on white."""
    rng = random.Random(seed)
    img = Image.new("RGB", (side, side), "white")
    d = ImageDraw.Draw(img)
    w, h = side // 4, side // 8
    boxes = []
    for _ in range(rng.randrange(3, 6)):
        x, y = rng.randrange(4, side - w - 4), rng.randrange(4, side - h - 4)
        fill = tuple(rng.randrange(150, 256) for _ in range(3))
        d.rectangle((x, y, x + w, y + h), fill=fill, outline="black", width=2)
        d.text((x + 4, y + h // 4), _words(rng, 1), fill="black", font=_font(h // 2))
        boxes.append((x + w // 2, y + h // 2))
    for (x0, y0), (x1, y1) in itertools.pairwise(boxes):
        d.line((x0, y0, x1, y1), fill="black", width=2)
        d.ellipse((x1 - 4, y1 - 4, x1 + 4, y1 + 4), fill="black")
    return img


def graphics(count: int, seed: int = 0, side: int = SIDE) -> list[tuple[str, str, Image.Image]]:
    """`count` (name, kind, image): the installed icons first (a seeded sample of up to
    half of `count`), the rest drawn screenshots and diagrams in turn, each seeded so that
    the same call gives the same images. No flat drawings: those are what
    `write_trial_queries` uses as images unrelated to the corpus."""
    rng = random.Random(seed)
    icons = installed_icons()
    icons = sorted(rng.sample(icons, min(len(icons), count // 2)))
    out = [(f"icon_{p.parent.name}_{p.stem}", "icon", load_icon(p, side)) for p in icons]
    drawn = (("screenshot", screenshot), ("diagram", diagram))
    for i in range(count - len(out)):
        kind, draw = drawn[i % len(drawn)]
        out.append((f"{kind}_{seed}_{i:04d}", kind, draw(seed * 100_003 + i, side)))
    return out


def write_folder(out_dir: str | Path, items: list[tuple[str, str, Image.Image]]) -> Path:
    """Each image as <name>.png with a <name>.txt caption naming its kind; returns the
    folder (`diffrep shards --folder` reads it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, kind, img in items:
        img.save(out / f"{name}.png")
        (out / f"{name}.txt").write_text(f"a {kind}: {name}")
    return out


def write_trial_queries(corpus: list[tuple[str, str, Image.Image]], folder: Path, unrelated: int,
                        pasted: int, seed: int) -> dict[str, dict]:
    """A folder of "generations" to scan against an index of `corpus` (from `graphics`),
    <name>.png and <name>.txt; returns {name: truth} (kind "unrelated" or "pasted", with
    what it is: the held-out icon, the drawing, or the pasted corpus image's name).
    Unrelated: half installed icons not in the corpus (distinct pictures:
    graphics.installed_icons), a quarter flat drawings, a quarter drawn scenes, with seeds
    the corpus does not use."""
    folder.mkdir(parents=True, exist_ok=True)
    used = {name for name, _, _ in corpus}
    held_out = [(name, img) for name, kind, img in graphics(4 * unrelated, seed=seed + 1)
                if kind == "icon" and name not in used][:unrelated // 2]
    n_draw = unrelated - len(held_out)
    drawn = [(f"flat_drawing_{10**6 + i}", flat_drawing(10**6 + i)) for i in range(n_draw // 2)]
    drawn += [(f"drawn_scene_{10**6 + i}", drawn_scene(10**6 + i)) for i in range(n_draw - len(drawn))]
    truth = {}
    for i, (name, img) in enumerate(held_out + drawn):
        qname = f"unrelated_{i:03d}"
        img.save(folder / f"{qname}.png")
        (folder / f"{qname}.txt").write_text(name)
        truth[qname] = {"kind": "unrelated", "what": name}
    rng = random.Random(seed)
    for i, (name, _, img) in enumerate(rng.sample(corpus, pasted)):
        copy, box = paste_object(img, drawn_scene(seed * 1000 + 900 + i, size=384), rng)
        qname = f"pasted_{i:03d}"
        copy.save(folder / f"{qname}.png")
        (folder / f"{qname}.txt").write_text(f"{name} in a drawn scene")
        truth[qname] = {"kind": "pasted", "what": name, "box": list(box)}
    return truth
