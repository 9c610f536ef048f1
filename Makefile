# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup data clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist where apt exists.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; \
	fi

# The main job: FDS against every baseline on a Fashion-MNIST subset (4-6 minutes on 2 cores, setup included);
# where the Debian package could not be installed, on the embedded digits data instead (said so).
FMNIST := /usr/share/datasets/fashion-mnist
run: setup
	@if [ -d $(FMNIST) ]; then \
		rm -rf results/fashion_mnist_small && \
		$(VENV)/bin/fds-tune compare --preset fashion_mnist_small --out results/fashion_mnist_small; \
	else \
		echo "note: Fashion-MNIST is not installed ($(FMNIST)); the main job falls back to the digits preset," \
		     "whose 72-image validation split is too small to separate the methods"; \
		rm -rf results/digits && $(VENV)/bin/fds-tune compare --preset digits --out results/digits; \
	fi

# Every test, the fault-tolerance end-to-end runs (driver SIGKILL + resume, node loss) included.
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results
