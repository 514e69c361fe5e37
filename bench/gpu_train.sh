#!/usr/bin/env bash
# ferrochat's training step on a CUDA GPU against PyTorch eager (Hugging Face
# LlamaForCausalLM from the same config.json, f32 and bf16 autocast) in one sitting.
#   bench/gpu_train.sh FERROCHAT_CUDA_BINARY [--preset d12] [--batch 16] [--seq 1024]
# The binary is built with `cargo build --release -p ferrochat-cli --features cuda`, or
# `scripts/build_cuda.sh` without `--nccl` (that one also needs Open MPI's libraries there).
# Writes ops.json, ours_f32.json, ours_bf16.json and torch.txt into $OUT (or target/bench-gpu).
set -uo pipefail
BIN=$1; shift
PRESET=d12 BATCH=16 SEQ=1024 STEPS=10 VOCAB=50304
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) PRESET=$2; shift 2;; --batch) BATCH=$2; shift 2;; --seq) SEQ=$2; shift 2;;
    --steps) STEPS=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;;
  esac
done
OUT=${OUT:-target/bench-gpu}; mkdir -p "$OUT/model"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# every op on the GPU against the CPU reference, and against its composite version
"$BIN" bench ops --device cuda --preset "$PRESET" --vocab "$VOCAB" --batch 2 --seq "$SEQ" \
  --output "$OUT/ops.json" 2>&1 | tee "$OUT/ops.txt"
# ours in f32 and with bf16 autocast (the GPU default), against PyTorch's two
for p in f32 bf16; do
  "$BIN" bench train --device cuda --precision $p --preset "$PRESET" --vocab "$VOCAB" \
    --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup 3 --output "$OUT/model" 2>&1 \
    | tee -a "$OUT/ours.txt"
  cp "$OUT/model/bench_train.json" "$OUT/ours_$p.json"
done
for flags in "" "--bf16"; do
  python3 bench/torch_train.py "$OUT/model" --device cuda $flags --batch "$BATCH" --seq "$SEQ" \
    --steps "$STEPS" --warmup 3 2>&1 | grep -v -i warn | tee -a "$OUT/torch.txt"
done
