#!/usr/bin/env bash
# A small model teaches a large one a skill (arithmetic): a distilled student becomes a
# specialist, answers fresh prompts, the world's judge keeps the right answers, and the
# large chat model is fine-tuned on them. A control fine-tunes the large model for the
# same steps on its own SFT data alone.
#   bench/specialist_loop.sh --chat runs/speedrun/chat --student DIR \
#     --replay runs/speedrun/world/sft.jsonl [--out target/specialist-loop]
# --student is a small base model (`ferrochat distill ... --student-preset d2`).
set -euo pipefail
cd "$(dirname "$0")/.."
CHAT="" STUDENT="" REPLAY="" OUT=target/specialist-loop WORLD_SEED=42
while [[ $# -gt 0 ]]; do
  case "$1" in
    --chat) CHAT=$2; shift 2;; --student) STUDENT=$2; shift 2;;
    --replay) REPLAY=$2; shift 2;; --out) OUT=$2; shift 2;;
    --world-seed) WORLD_SEED=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[[ -n $CHAT && -n $STUDENT && -n $REPLAY ]] || { echo "need --chat, --student and --replay" >&2; exit 2; }
scripts/build.sh -q
FC=$PWD/target/release/ferrochat
mkdir -p "$OUT"
W=(--pretrain-mb 0.1 --comparisons 10 --quiet)
# held-out arithmetic of five other worlds; the specialist's dialogues; fresh prompts
for s in 1 2 3 4 5; do "$FC" world generate --seed $s --output "$OUT/w$s" --sft 10 --rl-prompts 10 "${W[@]}"; done
"$FC" world generate --seed 11 --output "$OUT/wsft" --sft 150000 --rl-prompts 10 "${W[@]}"
"$FC" world generate --seed 12 --output "$OUT/wrl" --sft 10 --rl-prompts 120000 "${W[@]}"
python3 - "$OUT" "$REPLAY" <<'PY'
import json, random, sys
out, replay = sys.argv[1], sys.argv[2]
def user_turns(d):
    return [m["content"] for m in d["messages"] if m["role"] == "user"]
seen = {u for l in open(replay) for u in user_turns(json.loads(l))}
evals, ev = [], set()
for s in range(1, 6):
    for l in open(f"{out}/w{s}/heldout.jsonl"):
        d = json.loads(l)
        p = d["messages"][-1]["content"]
        if d["skill"] == "arithmetic" and p not in seen and p not in ev:
            ev.add(p); d["id"] = f"s{s}-{d['id']}"; evals.append(d)
with open(f"{out}/arith_eval.jsonl", "w") as f:
    f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in evals)
train = [l for l in open(f"{out}/wsft/sft.jsonl")
         if json.loads(l).get("skill") == "arithmetic" and not ev & set(user_turns(json.loads(l)))]
open(f"{out}/arith_train.jsonl", "w").writelines(train)
prompts, ps = [], set()
for l in open(f"{out}/wrl/rl_prompts.jsonl"):
    d = json.loads(l)
    p = d["messages"][-1]["content"]
    if d["skill"] == "arithmetic" and len(d["messages"]) == 1 and p not in ev and p not in ps:
        ps.add(p); prompts.append(l)
open(f"{out}/arith_prompts.jsonl", "w").writelines(prompts)
print(f"{len(evals)} held-out arithmetic prompts, {len(train)} specialist dialogues, {len(prompts)} fresh prompts")
PY
"$FC" sft --base "$STUDENT" --data "$OUT/arith_train.jsonl" --output "$OUT/specialist" --epochs 3 --quiet >"$OUT/specialist.log"
"$FC" teach --model "$OUT/specialist" --prompts "$OUT/arith_prompts.jsonl" --output "$OUT/taught.jsonl" \
  --per-prompt 2 --judge --batch 32
python3 - "$OUT" "$REPLAY" <<'PY'
import json, random, sys
out, replay = sys.argv[1], sys.argv[2]
seen, taught = set(), []
for l in open(f"{out}/taught.jsonl"):
    k = json.dumps(json.loads(l)["messages"], ensure_ascii=False)
    if k not in seen:
        seen.add(k); taught.append(l)
mix = taught + open(replay).readlines()
random.Random(0).shuffle(mix)
open(f"{out}/mix.jsonl", "w").writelines(mix)
print(f"{len(taught)} distinct judged answers, mixed with {len(mix) - len(taught)} replayed dialogues")
PY
"$FC" sft --base "$CHAT" --data "$OUT/mix.jsonl" --output "$OUT/taught_chat" --epochs 3 --lr 5e-4 --quiet >"$OUT/taught_chat.log"
steps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$OUT/taught_chat/meta.json")
"$FC" sft --base "$CHAT" --data "$REPLAY" --output "$OUT/control_chat" --steps "$steps" --lr 5e-4 --quiet >"$OUT/control_chat.log"
for m in "$CHAT" "$OUT/specialist" "$OUT/control_chat" "$OUT/taught_chat"; do
  name=$(basename "$m")
  echo "== $m"
  "$FC" eval --model "$m" --heldout "$OUT/arith_eval.jsonl" --world-seed "$WORLD_SEED" \
    --output "$OUT/eval_arith_$name.json" | grep Overall
  [[ $m == "$OUT/specialist" ]] || "$FC" eval --model "$m" --world-seed "$WORLD_SEED" \
    --output "$OUT/eval_all_$name.json" | grep Overall
done
