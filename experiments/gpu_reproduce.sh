#!/bin/sh
# The paper's CIFAR-10 / WRN-16-1 comparison on a GPU machine: make setup (the .venv), then experiments/gpu_reproduce.py
# with these arguments (paths relative to where you call it), e.g.  experiments/gpu_reproduce.sh --data-root ~/data --out results/cifar10_paper
set -e; ROOT="$(cd "$(dirname "$0")/.." && pwd)"; make -C "$ROOT" setup; exec "$ROOT/.venv/bin/python" "$ROOT/experiments/gpu_reproduce.py" "$@"
