# linklens — every task a developer or CI needs. `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
# Every install is held to the versions the suite last passed with: an upstream release (w3lib 2.6
# renamed the gb2312 label's codec) must not change what a fresh clone or CI installs unannounced.
CONSTRAINTS := constraints.txt
CHROMIUM ?= /usr/bin/chromium
# Add 1000000 for the full scale run (~5 GB of data in ../bench-cache, ~30 min on 2 cores).
INDEX_BENCH_SIZES ?= 10000,100000

.PHONY: install install-ray constraints browser nginx test lint bench run build serve clean

install: $(STAMP)

# torch is pinned first so that nothing pulls the multi-GB CUDA build. The install compiles
# index/*.pyx (Cython, gcc), so a change to one reinstalls.
$(STAMP): pyproject.toml setup.py $(CONSTRAINTS) $(wildcard index/*.pyx)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# The Ray engine is an optional extra: the tests, lint and benchmarks install it; `make run` does not.
install-ray: $(RAY_STAMP)

$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,ray]'
	touch $(RAY_STAMP)

# After a green `make test` on newer versions (pip install -U ... in the venv): pin them for everyone.
constraints: install-ray
	{ sed -n '1,2p' $(CONSTRAINTS); $(PY) -m pip freeze --exclude-editable | sed 's/+[a-z0-9.]*$$//' \
	  | grep -iv '^pip==\|^setuptools==\|^wheel=='; } > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

# The search page is tested in a real headless Chromium (Debian's package; Playwright drives it).
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the page test needs Chromium at $(CHROMIUM): sudo apt-get install chromium"; exit 1; fi; }

# The replica test runs deploy/nginx.conf in a real nginx (Debian's package), as the test user on loopback.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	  else echo "the replica test needs nginx: sudo apt-get install nginx"; exit 1; fi; }

test: install-ray browser nginx
	$(BIN)/pytest -q --durations=15

lint: install-ray
	$(BIN)/ruff check ingest index serve cli tests bench
	$(BIN)/mypy ingest index serve cli

bench: install-ray
	mkdir -p bench/results
	$(PY) bench/crawl.py --out bench/results/crawl.json
	$(PY) bench/index.py --prepare --sizes $(INDEX_BENCH_SIZES)
	$(PY) bench/index.py --sizes $(INDEX_BENCH_SIZES) --fixture --out bench/results/index.json
	$(PY) bench/serve.py --out bench/results/serve.json
	$(PY) bench/relevance.py --out bench/results/relevance.json
	$(PY) bench/ray_crawl.py --out bench/results/ray_crawl.json
	$(PY) bench/ray_crawl.py --build --no-scale --out bench/results/ray_build.json
	$(PY) bench/ray_embed.py --out bench/results/ray_embed.json

# The main job: crawl + index the bundled awesome-scalability list, then serve it on http://127.0.0.1:8000
run: install
	$(BIN)/linklens build
	$(BIN)/linklens search "how to avoid hot shards"
	$(BIN)/linklens serve

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/results
