#!/usr/bin/env bash
# The accelerator check, as one script of a few minutes on an H200-class GPU:
#   1. the device draws the CPU's tokens in fp32 (greedy, small model: benchmarks/device_tokens.py);
#   2. d16 sampling in bf16 at batch 1, 16 and 64 against the official code (same weights, same tokens checked in
#      fp32 first), nextscale with and without --fast, peak memory (benchmarks/official_side_by_side.py).
# Usage: benchmarks/gpu.sh [--official-src ../VAR] [--device cuda] [--depth 16] [--batches "1 16 64"]
#        [--tokenizer vqvae-f16-c160] [--tokenizer-channels N] [--repeats 3]
# On a CPU (the test suite's smoke run): benchmarks/gpu.sh --device cpu --depth 1 --batches "1 2" \
#        --tokenizer fmnist-32 --precisions fp32 --repeats 1
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda depth=16 batches="1 16 64" tokenizer=vqvae-f16-c160 repeats=3 precisions=bf16 official=() channels=()
while [ $# -gt 0 ]; do
  case "$1" in
    --official-src) official=(--official-src "$2"); shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --depth) depth="$2"; shift 2 ;;
    --batches) batches="$2"; shift 2 ;;
    --tokenizer) tokenizer="$2"; shift 2 ;;
    --tokenizer-channels) channels=(--tokenizer-channels "$2"); shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --precisions) precisions="$2"; shift 2 ;;
    *) echo "gpu.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
python benchmarks/device_tokens.py --device "$device"
echo "== d$depth sampling, batches $batches, $device =="
python benchmarks/official_side_by_side.py "${official[@]}" --device "$device" --depth "$depth" \
  --tokenizer "$tokenizer" "${channels[@]}" --batch-sizes "${batches// /,}" --precisions "$precisions" \
  --repeats "$repeats" --train-depth 0 --without-fast
