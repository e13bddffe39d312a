"""Geometric verification (diffrep.search.geometry) on real photos: a pasted object and an
edited copy are verified with the right boxes and scale; unrelated photos and flat
drawings (what fools a global or region descriptor on icons) are not."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageEnhance, ImageOps
from skimage import data

from diffrep.search.geometry import verify_pair
from diffrep.synthetic import flat_drawing


def photo(name: str, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB").resize(size, Image.Resampling.BILINEAR)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def jpeg(img: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize("method", ["sift", "orb"])
def test_a_pasted_object_is_verified_with_its_box_and_scale(method):
    training = photo("coffee", (300, 200))
    scene = photo("rocket", (640, 480))
    pasted = training.resize((210, 140))  # 0.7x, about 10% of the scene's area
    scene.paste(pasted, (380, 260))
    truth = (380 / 640, 260 / 480, 590 / 640, 400 / 480)
    v = verify_pair(jpeg(scene), training, method=method)
    assert v.verified and v.inliers >= 30, v
    assert iou(v.box, truth) > 0.8, (v.box, truth)
    if method == "sift":  # the pasted pixels themselves, re-encoded: an identical region
        assert v.identical_region and v.pixel_agreement > 0.95, v
    # the inlier features lie on the pasted photo's textured part, inside its box
    tol = 0.01
    assert (v.inlier_box[0] >= truth[0] - tol and v.inlier_box[1] >= truth[1] - tol
            and v.inlier_box[2] <= truth[2] + tol and v.inlier_box[3] <= truth[3] + tol), (v.inlier_box, truth)
    assert v.scale == pytest.approx(0.7, rel=0.05)
    # searched inside a region match's box (normalised, of the whole scene): same boxes
    region = (0.55, 0.5, 0.95, 0.9)
    r = verify_pair(jpeg(scene), training, query_box=region, method=method)
    assert r.verified and iou(r.box, truth) > 0.8, r


def test_a_mirrored_paste_is_verified_only_when_mirrors_are_tried():
    training = photo("chelsea", (300, 240))
    scene = photo("rocket", (640, 480))
    scene.paste(ImageOps.mirror(training).resize((240, 192)), (60, 40))
    truth = (60 / 640, 40 / 480, 300 / 640, 232 / 480)
    v = verify_pair(jpeg(scene), training)
    assert v.verified and v.mirrored and v.inliers >= 30 and v.identical_region, v
    assert iou(v.box, truth) > 0.8, (v.box, truth)
    assert v.scale == pytest.approx(0.8, rel=0.05)
    unflipped = verify_pair(jpeg(scene), training, mirror=False)
    assert not unflipped.verified and not unflipped.mirrored, unflipped


def test_an_edited_copy_is_verified():
    training = photo("astronaut", (320, 320))
    edited = ImageEnhance.Color(training.rotate(12, resample=Image.Resampling.BILINEAR,
                                                fillcolor=(255, 255, 255))).enhance(0.4)
    v = verify_pair(jpeg(edited.crop((20, 10, 300, 310)), 60), training)
    assert v.verified and v.inliers >= 50 and not v.mirrored, v


def test_unrelated_photos_and_flat_drawings_are_not_verified():
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins"]
    for a in names:
        for b in names:
            if a != b:
                v = verify_pair(photo(a, (320, 320)), photo(b, (320, 320)))
                assert not v.verified and v.inliers < 15, (a, b, v)
    for seed in range(6):
        v = verify_pair(flat_drawing(seed), flat_drawing(seed + 100))
        assert not v.verified, (seed, v)
    # a flat graphic against itself, re-encoded: few features, still one geometry
    same = verify_pair(jpeg(flat_drawing(3)), flat_drawing(3), min_inliers=4)
    assert same.verified, same


def test_a_solarized_paste_is_no_identical_region():
    training = photo("coffee", (300, 200))
    scene = photo("rocket", (640, 480))
    scene.paste(ImageOps.solarize(training, 128).resize((210, 140)), (380, 260))
    v = verify_pair(jpeg(scene), training)
    assert not v.identical_region and (v.pixel_agreement is None or v.pixel_agreement < 0.9), v
