"""Building test inputs: tar shards member by member, encoded images."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A smooth random RGB image (compresses like a photo, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write a tar holding `members` (name, data) in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(key: str, img: Image.Image | bytes, caption: str | bytes = "a caption",
                   url: str | None = None) -> list[tuple[str, bytes]]:
    data = img if isinstance(img, bytes) else encode(img)
    cap = caption if isinstance(caption, bytes) else caption.encode()
    meta = f'{{"key": "{key}", "url": "{url or "https://x.invalid/" + key}"}}'.encode()
    return [(f"{key}.jpg", data), (f"{key}.txt", cap), (f"{key}.json", meta)]


def need_chromium() -> str:
    """Chromium's path; skips the test, saying so, without it (Debian's chromium is not
    something `make setup` installs; .ci/run installs it)."""
    import pytest

    path = chromium()
    if path is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return path


def chromium() -> str | None:
    """Path of a headless-capable Chromium, or None."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


PROBE = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
         "document.body.setAttribute('data-images',im.length);"
         "document.body.setAttribute('data-images-ok',im.filter(i=>i.complete&&i.naturalWidth>0).length);"
         "document.body.setAttribute('data-svgs',[...document.querySelectorAll('svg')]"
         ".filter(s=>s.getBoundingClientRect().width>0).length);});</script>")


def render_report(html_path, work_dir) -> dict:
    """Load a report in headless Chromium and count what rendered: images decoded
    (naturalWidth > 0) and SVG plots laid out. A copy gets a probe script; the report
    itself has no scripts."""
    import re
    import subprocess
    from pathlib import Path

    page = Path(html_path).read_text()
    probe = Path(work_dir) / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    out = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--no-first-run", "--virtual-time-budget=10000",
         "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"chromium failed: {out.stderr[-2000:]}")
    attrs = dict(re.findall(r'data-(images|images-ok|svgs)="(\d+)"', out.stdout))
    return {"images": int(attrs.get("images", -1)), "images_ok": int(attrs.get("images-ok", -1)),
            "svgs": int(attrs.get("svgs", -1)), "dom": out.stdout}
