#!/usr/bin/env bash
# The GPU check (issue 29, item 5; BENCHMARKS.md "GPU check"): parity tests on the GPU, a bf16
# training step of every family on the flash kernel, `plmkit bench` against transformers and
# MFU against the card's bf16 matmul peak, in at most 8 minutes, into benchmarks/gpu_check.json.
# Exits non-zero on any failure. Usage: benchmarks/gpu_check.sh [--device cuda:1]
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python
timeout 480 "$python" benchmarks/gpu_check.py --out benchmarks/gpu_check.json "$@"
