#!/usr/bin/env bash
# Scaling of data-parallel training over MPI on this machine: the same global batch
# trained by one process (all cores), by one process on one core, and by N processes
# under mpirun (the cores split between them), median of a few rounds. Pretraining is
# measured in tokens/s; `--stage grpo` measures GRPO (rollouts and updates, from the
# pretrained model, 16 prompts x 4 answers per iteration) in answers/s.
#   bench/data_parallel.sh [--stage pretrain|grpo] [--preset small] [--batch 8] [--seq 256]
#                          [--np 2] [--rounds 3]
# Needs Open MPI (Debian: openmpi-bin libopenmpi-dev, and libclang-dev to build).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=small BATCH=8 SEQ=256 NP=2 ROUNDS=3 STEPS=12 STAGE=pretrain
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) PRESET=$2; shift 2;; --batch) BATCH=$2; shift 2;; --seq) SEQ=$2; shift 2;;
    --np) NP=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;; --steps) STEPS=$2; shift 2;;
    --stage) STAGE=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
scripts/build.sh -q --features mpi
B=target/release/ferrochat
OUT=target/bench-dp; rm -rf "$OUT"; mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# a corpus of the world's prose, tokenized once
if [[ ! -f "$OUT/data/manifest.json" ]]; then
  $B world generate --output "$OUT/world" --pretrain-mb 2 >/dev/null
  $B tokenizer train --vocab-size 4096 --output "$OUT/tok" "$OUT/world/pretrain.txt" >/dev/null
  $B data prepare --quiet --split-above 65536 --tokenizer "$OUT/tok" --output "$OUT/data" \
    "$OUT/world/pretrain.txt"
fi
# tokens/s of the steps after the first two (allocation warm-up), from the metrics
rate() {
  python3 - "$1" <<'PY'
import json, statistics, sys
steps = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"step"' in l]
steps = [s for s in steps if s["kind"] == "step"][2:]
print(round(statistics.median(s["tokens_per_sec"] for s in steps)))
PY
}
args=(pretrain --quiet --preset "$PRESET" --seq "$SEQ" --steps "$STEPS" --eval-every 0
      --checkpoint-every 0 --data "$OUT/data")
UNIT=tokens/s
if [[ "$STAGE" == grpo ]]; then
  # the policy: a short pretraining run; the global batch: 16 prompts x 4 answers
  $B "${args[@]}" --batch "$BATCH" --output "$OUT/policy" >/dev/null
  UNIT=answers/s BATCH=16
  args=(grpo --quiet --iterations 3 --minibatch 16 --max-new-tokens 48 --val-prompts 0
        --eval-every 0 --policy "$OUT/policy" --prompts "$OUT/world/rl_prompts.jsonl")
  rate() {
    python3 -c "import json,sys; s=json.load(open(sys.argv[1]+'/grpo.json')); print(round(s['iterations']*16*4/s['elapsed_secs'],1))" "$1"
  }
fi
batch() { [[ "$STAGE" == grpo ]] && echo --prompts-per-iter "$1" || echo --batch "$1"; }
all=(); one=(); dp=()
for r in $(seq "$ROUNDS"); do
  rm -rf "$OUT"/run_*
  # GRPO's prompts per iteration are global; pretraining's --batch is per rank
  per_rank=$BATCH; [[ "$STAGE" == grpo ]] || per_rank=$((BATCH / NP))
  $B "${args[@]}" $(batch "$BATCH") --output "$OUT/run_all" >/dev/null
  RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 \
    $B "${args[@]}" $(batch "$BATCH") --output "$OUT/run_one" >/dev/null
  mpirun -np "$NP" --oversubscribe --bind-to core $B "${args[@]}" \
    $(batch "$per_rank") --world-size "$NP" --output "$OUT/run_dp" >/dev/null
  all+=("$(rate "$OUT/run_all")"); one+=("$(rate "$OUT/run_one")"); dp+=("$(rate "$OUT/run_dp")")
  echo "round $r: 1 process all cores ${all[-1]}, 1 process 1 core ${one[-1]}, $NP ranks ${dp[-1]} $UNIT"
done
python3 - "$NP" "${all[*]}" "${one[*]}" "${dp[*]}" "$UNIT" <<'PY'
import statistics, sys
n = int(sys.argv[1])
a, o, d = (statistics.median(float(x) for x in s.split()) for s in sys.argv[2:5])
print(f"median {sys.argv[5]}: 1 process (all cores) {a:.1f}, 1 process (1 core) {o:.1f}, "
      f"{n} ranks {d:.1f}; scaling efficiency {d / (n * o):.0%} of {n}x one core, "
      f"{d / a:.2f}x the threaded single process")
PY
