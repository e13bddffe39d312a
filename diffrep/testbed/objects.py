"""Object cut-outs for testbed v2's scenes, read from two Debian packages of images:

- openclipart-png: public-domain clip art (Creative Commons Public Domain Dedication;
  /usr/share/doc/openclipart-png/copyright), under /usr/share/openclipart/png;
- tuxpaint-stamps-default: Tux Paint's stamps, many of them photographs of real things
  (GPL-2; /usr/share/doc/tuxpaint-stamps-default/copyright), under
  /usr/share/tuxpaint/stamps, each with an English description in its .txt file.

Install both with `apt-get install openclipart-png tuxpaint-stamps-default` (only to
rebuild the pool: `make testbed`; the built pool is committed). Categories that are
variations of one drawing (shapes, buttons, flags, letters) are left out, so objects
are distinct pictures. Images are read with transparency (RGBA), shrunk to fit
`max_side`; an unreadable file, one over 20 megapixels or one under 24 px is skipped
and counted. Held in memory: a few thousand 128 px thumbnails (tens of MB), a fixed
catalogue that does not grow with any corpus.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

OPENCLIPART = Path("/usr/share/openclipart/png")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
LEFT_OUT = ("shapes", "buttons", "flags", "alphabet")
INSTALL_HINT = "apt-get install openclipart-png tuxpaint-stamps-default"


@dataclass(frozen=True)
class CutOut:
    """One object: a short English name ("bison"), its category ("animals"), the file it
    came from (relative to its package root) and the RGBA picture."""

    name: str
    category: str
    source: str
    image: Image.Image


def _name_from_file(path: Path) -> str:
    """openclipart names files "<title words>_<author>_NN": the first word of the title,
    digits dropped ("Traslocatore03" -> "traslocatore"); the folder's name when none is left."""
    words = [re.sub(r"\d+", "", w) for w in re.split(r"[_\-.\s]+", path.stem.lower())]
    words = [w for w in words if w.isalpha() and len(w) > 1]
    return words[0] if words else path.parent.name


def _name_from_text(path: Path) -> str | None:
    """A Tux Paint stamp's English description ("A badger." -> "badger")."""
    txt = path.with_suffix(".txt")
    if not txt.exists():
        return None
    first = txt.read_text(errors="replace").splitlines()[0].strip().rstrip(".!").lower()
    first = re.sub(r"^(a|an|the)\s+", "", first)
    return first if 0 < len(first) <= 40 and "=" not in first else None


def load_cutouts(max_side: int = 128, roots: tuple[Path, ...] = (OPENCLIPART, TUXPAINT)
                 ) -> tuple[list[CutOut], Counter]:
    """Every usable object of the installed packages, in sorted path order, and the count
    of files skipped by reason. Raises FileNotFoundError naming the apt-get command when
    neither package is installed."""
    found = [r for r in roots if r.is_dir()]
    if not found:
        raise FileNotFoundError(f"no object packages under {', '.join(map(str, roots))}: {INSTALL_HINT}")
    out: list[CutOut] = []
    skipped: Counter = Counter()
    for root in found:
        for path in sorted(root.rglob("*.png")):
            rel = path.relative_to(root)
            if any(part in LEFT_OUT for part in rel.parts[:-1]):
                skipped["left_out_category"] += 1
                continue
            try:
                with warnings.catch_warnings():  # a huge file is skipped below, not warned about
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    im = Image.open(path)
                with im:
                    if im.size[0] * im.size[1] > 20_000_000:
                        skipped["too_large"] += 1
                        continue
                    img = im.convert("RGBA")
            except (OSError, ValueError, Image.DecompressionBombError):
                skipped["unreadable"] += 1
                continue
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            bbox = img.getchannel("A").getbbox()
            if bbox is None or min(bbox[2] - bbox[0], bbox[3] - bbox[1]) < 24:
                skipped["too_small_or_empty"] += 1
                continue
            name = (_name_from_text(path) if root == TUXPAINT else None) or _name_from_file(path)
            out.append(CutOut(name, rel.parts[0] if len(rel.parts) > 1 else root.name,
                              f"{root.name}/{rel}", img.crop(bbox)))
    return out, skipped

