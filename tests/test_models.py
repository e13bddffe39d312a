"""Embedders: registry, safe weight loading from files the tests save themselves,
preprocessing agreement, and the real SSCD weights when the package is installed."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffrep.models import WeightsError, create_embedder, list_models, model_dir_name
from diffrep.models.sscd import SSCDResNet50
from tests.conftest import requires_sscd
from tests.helpers import photo


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sscd_random_weights(tmp_path_factory):
    torch.manual_seed(123)
    model = SSCDResNet50().eval()
    d = tmp_path_factory.mktemp("w")
    save_file(model.state_dict(), d / "sscd.safetensors")
    torch.save({"state_dict": model.state_dict()}, d / "sscd.pth")
    torch.jit.trace(model, torch.randn(1, 3, 64, 64)).save(str(d / "sscd.torchscript.pt"))
    return model, d


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="sscd_disc_mixup"):
        create_embedder("sscd_v9", "random")
    assert "dino_vitb16" in list_models()
    assert model_dir_name("clip:ViT-B-32") == "clip-ViT-B-32"


def test_models_without_default_weights_need_explicit_choice():
    with pytest.raises(WeightsError, match="random"):
        create_embedder("clip:ViT-B-32")


def test_sscd_state_dict_loads_from_safetensors_and_weights_only_pth(sscd_random_weights):
    reference, d = sscd_random_weights
    img = photo(5, (200, 150))
    x = torch.from_numpy(np.asarray(img.resize((320, 320), Image.Resampling.BILINEAR))).float()
    x = (x / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = reference(x.permute(2, 0, 1)[None]).numpy()
    for f in ("sscd.safetensors", "sscd.pth"):
        emb = create_embedder("sscd_disc_mixup", str(d / f), device="cpu")
        assert not emb.random_init
        np.testing.assert_allclose(emb.embed_images([img]), expected, atol=1e-5)


def test_torchscript_needs_a_pinned_sha256(sscd_random_weights):
    reference, d = sscd_random_weights
    path = d / "sscd.torchscript.pt"
    with pytest.raises(WeightsError, match="sha256"):
        create_embedder("sscd_disc_mixup", str(path))
    with pytest.raises(WeightsError, match="corrupt"):
        create_embedder("sscd_disc_mixup", {"path": str(path), "sha256": "0" * 64})
    emb = create_embedder("sscd_disc_mixup", {"path": str(path), "sha256": sha(path)}, device="cpu")
    ref = create_embedder("sscd_disc_mixup", str(d / "sscd.safetensors"), device="cpu")
    img = photo(6)
    np.testing.assert_allclose(emb.embed_images([img]), ref.embed_images([img]), atol=1e-5)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    with pytest.raises(WeightsError, match="weights_only"):
        create_embedder("sscd_disc_mixup", str(bad))
    assert not marker.exists()


def test_weights_that_do_not_fit_are_refused(tmp_path):
    save_file({"fc.weight": torch.zeros(2, 2)}, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="does not fit"):
        create_embedder("sscd_disc_mixup", str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="does not exist"):
        create_embedder("sscd_disc_mixup", str(tmp_path / "missing.safetensors"))


def test_clip_checkpoint_round_trip_and_random_is_seeded(tmp_path):
    a = create_embedder("clip:ViT-B-32", "random", device="cpu")
    b = create_embedder("clip:ViT-B-32", "random", device="cpu")
    img = photo(7, (300, 200))
    np.testing.assert_array_equal(a.embed_images([img]), b.embed_images([img]))
    import open_clip

    torch.manual_seed(99)
    model = open_clip.create_model("ViT-B-32")
    save_file(model.state_dict(), tmp_path / "clip.safetensors")
    loaded = create_embedder("clip:ViT-B-32", str(tmp_path / "clip.safetensors"), device="cpu")
    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    with torch.no_grad():
        direct = model.eval().encode_image(preprocess(img)[None], normalize=True).numpy()
    np.testing.assert_allclose(loaded.embed_images([img]), direct, atol=1e-5)
    assert not np.allclose(loaded.embed_images([img]), a.embed_images([img]), atol=1e-3)


def test_dino_tokens_and_pooled_descriptor():
    emb = create_embedder("dino_vitb16", "random", device="cpu")
    assert emb.has_tokens and emb.dim == 768
    prepared = np.stack([emb.prepare(photo(i, (240, 180))) for i in range(2)])
    assert prepared.shape == (2, 224, 224, 3) and prepared.dtype == np.uint8
    pooled, tokens = emb.embed_prepared_tokens(prepared)
    assert tokens.shape == (2, 196, 768)
    np.testing.assert_allclose(np.linalg.norm(tokens, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pooled, emb.embed_prepared(prepared), atol=1e-5)


@requires_sscd
def test_real_sscd_onnx_finds_an_edited_copy():
    import skimage.data

    original = Image.fromarray(skimage.data.astronaut())
    w, h = original.size
    edited = original.crop((30, 20, w - 40, h - 10)).resize((300, 290)).rotate(0)
    edited = Image.eval(edited, lambda v: min(255, int(v * 1.15)))
    others = [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())]
    for name in ("sscd_onnx", "sscd_distilled_onnx"):
        emb = create_embedder(name, device="cpu")
        v = emb.embed_images([original, edited, *others])
        copy_sim, other_sims = float(v[0] @ v[1]), (v[0] @ v[2:].T)
        assert copy_sim > 0.5 and other_sims.max() < 0.3, (name, copy_sim, other_sims)


@requires_sscd
def test_index_jobs_and_onnx_embedding_never_load_torch():
    """The jobs that only read indexes (build_index, dedup, search, serve), the embed and
    scan entry points, and an ONNX SSCD embedding run without torch in the process: it is
    465 MB of peak RSS and 1.7 s in every Ray worker that imports it (process-cost.json)."""
    import subprocess
    import sys

    code = ("import sys; import jobs.build_index, jobs.dedup, jobs.search, jobs.serve, jobs.embed, "
            "jobs.scan; from PIL import Image; from diffrep.models import create_embedder; "
            "create_embedder('sscd_distilled_onnx').embed_images([Image.new('RGB', (64, 64))]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


@requires_sscd
def test_onnx_sscd_asked_for_cuda_without_a_cuda_provider_says_so_and_runs_on_cpu(caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with caplog.at_level("WARNING", logger="diffrep"):
        emb = create_embedder("sscd_distilled_onnx", device="cuda")
    assert emb.device == "cpu" and "no CUDA provider" in caplog.text
    assert create_embedder("sscd_distilled_onnx", device="auto").device == "cpu"


@requires_sscd
def test_sscd_short288_mode_batches_by_shape():
    emb = create_embedder("sscd_onnx", device="cpu", resize="short288")
    imgs = [photo(1, (400, 300)), photo(2, (300, 400)), photo(3, (400, 300))]
    together = emb.embed_images(imgs)
    alone = np.concatenate([emb.embed_images([i]) for i in imgs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert emb.prepare(imgs[0]).shape[:2] == (288, 384)


def test_open_clip_random_init_warning_is_not_repeated(caplog):
    """open_clip warns "initialized randomly" even when weights are loaded right after; the
    embed job warns about real random init itself."""
    import logging

    from diffrep.models import create_embedder

    with caplog.at_level(logging.WARNING):
        create_embedder("clip:ViT-B-32", weights="random")
    assert "initialized randomly" not in caplog.text
