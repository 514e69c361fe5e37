"""`ferrochat export gguf` gives a file llama.cpp runs as we do: the `gguf` package
reads every tensor back (f32 exactly as the checkpoint holds it), llama.cpp tokenizes
prompts into our ids, its logits match ours on the same weights (f32, or rounded to f16,
q8_0 or q4_0 by `ferrochat quantize`), and its greedy tokens are ours.

    python tests/interop/gguf_check.py --ferrochat target/debug/ferrochat --model DIR
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

PROMPTS = ["The capital of France is", "法国的首都是", "What is 7 plus 8?"]
NEW_TOKENS = 24


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def check_file(path, model_dir, kind):
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    r = GGUFReader(path)
    field = lambda k: r.fields[k]  # noqa: E731
    arch = bytes(field("general.architecture").parts[-1]).decode()
    assert arch == "llama", arch
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    blocks = int(field("llama.block_count").parts[-1][0])
    assert blocks == cfg["num_hidden_layers"], blocks
    n_vocab = len(field("tokenizer.ggml.tokens").data)
    assert n_vocab == cfg["vocab_size"], n_vocab
    assert "tokenizer.chat_template" in r.fields
    tensors = {t.name: t for t in r.tensors}
    ours = load_file(os.path.join(model_dir, "model.safetensors"))
    # a mixture's experts are stacked: one tensor per block for each of w1, w2, w3
    experts = cfg.get("num_local_experts") or 1
    want_count = len(ours) - 3 * (experts - 1) * cfg["num_hidden_layers"]
    assert len(tensors) == want_count, (sorted(tensors), sorted(ours))
    if experts > 1:
        assert int(field("llama.expert_count").parts[-1][0]) == experts
        assert int(field("llama.expert_used_count").parts[-1][0]) == cfg["num_experts_per_tok"]
        stacked = tensors["blk.0.ffn_gate_exps.weight"]
        want_shape = (cfg["hidden_size"], cfg["intermediate_size"], experts)
        assert tuple(int(d) for d in stacked.shape) == want_shape, stacked.shape
        if kind == "f32":
            got = np.asarray(stacked.data).reshape(experts, cfg["intermediate_size"], -1)
            for x in range(experts):
                w1 = ours[f"model.layers.0.block_sparse_moe.experts.{x}.w1.weight"]
                assert np.array_equal(got[x], w1), f"expert {x} differs"
    emb = tensors["token_embd.weight"]
    want = ours["model.embed_tokens.weight"]
    assert tuple(int(d) for d in emb.shape) == (want.shape[1], want.shape[0]), emb.shape
    if kind == "f32":
        got = np.asarray(emb.data).reshape(want.shape)
        assert np.array_equal(got, want), "token_embd differs"
        norm = np.asarray(tensors["output_norm.weight"].data)
        assert np.array_equal(norm, ours["model.norm.weight"]), "output_norm differs"
    print(f"  gguf reads {kind}: {len(tensors)} tensors, {n_vocab} tokens, {blocks} blocks")


def llama_cpp_run(path, ids, stops, new_tokens):
    """Logits of every prompt position, and the greedy continuation."""
    import numpy as np
    from llama_cpp import Llama

    # the key/value cache in f32 (llama.cpp's default is f16), as ours keeps it, so that
    # f32 weights give the same sums in another order and nothing else
    f32 = 0  # GGML_TYPE_F32
    llm = Llama(model_path=path, n_ctx=0, logits_all=True, verbose=False, n_threads=2, seed=0,
                type_k=f32, type_v=f32)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    out = []
    for _ in range(new_tokens):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if t in stops:
            break
        out.append(t)
        llm.eval([t])
    return llm, logits, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferrochat", required=True)
    ap.add_argument("--model", required=True, action="append",
                    help="a trained checkpoint folder (repeat for several)")
    args = ap.parse_args()
    for model in args.model:
        print(f"GGUF exports of {model}")
        check_model(args.ferrochat, model)
    print("GGUF: gguf reads every export; llama.cpp's tokens, logits and greedy text match ours")


def check_model(ferrochat, model):
    args = argparse.Namespace(ferrochat=ferrochat, model=model)
    fc = os.path.abspath(args.ferrochat)
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    stops = {cfg["bos_token_id"], cfg["eos_token_id"]}
    work = tempfile.mkdtemp(prefix="ferrochat-gguf-")
    # the largest logit difference allowed per kind. Each export is compared with our own
    # run of the same rounded weights (`ferrochat quantize`, which `logits` and `generate`
    # read), so what is left is the same sums in another order, plus llama.cpp rounding
    # the activations to 8 bits for its quantized products
    bounds = {"f32": 1e-4, "f16": 0.05, "q8_0": 0.01, "q4_0": 0.01}
    failures = []
    for kind, bound in bounds.items():
        path = os.path.join(work, f"model-{kind}.gguf")
        run([fc, "export", "gguf", "--model", args.model, "--output", path, "--type", kind])
        size = os.path.getsize(path)
        check_file(path, args.model, kind)
        mine = args.model
        if kind != "f32":
            mine = os.path.join(work, f"ours-{kind}")
            run([fc, "quantize", "--model", args.model, "--output", mine, "--type", kind])
        same_tokens = 0
        worst = 0.0
        for p in PROMPTS:
            ours = json.loads(run([fc, "logits", "--model", mine, "--prompt", p]))
            ids = ours["ids"]  # the prompt alone, as `logits` reads it
            llm, logits, _ = llama_cpp_run(path, ids, stops, 0)
            theirs_ids = llm.tokenize(p.encode(), add_bos=False, special=False)
            if theirs_ids != ids:
                failures.append(f"{kind}: llama.cpp tokenizes {p!r} as {theirs_ids}, we as {ids}")
            diff = float(np.max(np.abs(logits - np.array(ours["logits"]))))
            del llm
            # `generate` starts the text with <|bos|>
            llm, _, cont = llama_cpp_run(path, [cfg["bos_token_id"]] + ids, stops, NEW_TOKENS)
            worst = max(worst, diff)
            text = run([fc, "generate", "--model", mine, "--prompt", p,
                        "--temperature", "0", "--max-tokens", str(NEW_TOKENS)])[:-1]
            theirs = p + tok.decode(cont, skip_special_tokens=False)
            if text == theirs:
                same_tokens += 1
            else:
                print(f"    greedy from {p!r} differs\n      ours:      {text!r}\n      llama.cpp: {theirs!r}")
                failures.append(f"{kind}: greedy from {p!r} differs")
            del llm
        print(f"  llama.cpp {kind} ({size / 1e6:.2f} MB): max abs logit diff {worst:.2e} "
              f"(bound {bound}), greedy text identical on {same_tokens}/{len(PROMPTS)} prompts")
        if worst > bound:
            failures.append(f"{kind}: logits differ by {worst} > {bound}")
    if failures:
        sys.exit(f"GGUF check of {model} failed:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
