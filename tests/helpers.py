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


JOB_TIMEOUT_S = 600


def job_env(**extra: str) -> dict:
    import os

    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1", **extra}


def kill_and_resume(args: list[str], kill_after: int, outputs: Path, cwd: Path | None = None,
                    on_killed=None) -> str:
    """Run the job `args` with DIFFREP_KILL_AFTER_UNITS=kill_after (its driver SIGKILLs
    itself right after that many finished units: diffrep.faults), check it died by that
    kill, wait until the cluster has ended its actors and tasks, call `on_killed()` (to
    look at what the killed run left), rerun it to success, and check no partial file is
    visible under `outputs`. Returns the resumed run's log."""
    import signal
    import subprocess

    from diffrep.storage import TMP_MARKER

    killed = subprocess.run(args, env=job_env(DIFFREP_KILL_AFTER_UNITS=str(kill_after)), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=JOB_TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL, (
        f"the job was to be killed after {kill_after} unit(s) but ended with "
        f"{killed.returncode}:\n{killed.stdout[-3000:]}")
    wait_for_cluster_cpus_free()
    if on_killed is not None:
        on_killed()
    resumed = subprocess.run(args, env=job_env(), cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=JOB_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    partial = [p for p in outputs.rglob("*") if TMP_MARKER in p.name]
    assert not partial, partial
    return resumed.stdout


def wait_for_cluster_cpus_free(deadline_s: float = 120) -> None:
    """Wait until every CPU of the connected cluster is free: a killed driver's actors and
    tasks hold CPUs (and may still write) until Ray has ended them."""
    import time

    import ray

    if not ray.is_initialized():
        return
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources().get("CPU", 0):
            return
        time.sleep(0.5)
    raise AssertionError(f"the killed job's actors/tasks still hold CPUs after {deadline_s} s: "
                         f"{ray.available_resources()} of {ray.cluster_resources()}")
