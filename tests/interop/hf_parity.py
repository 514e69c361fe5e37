"""A ferrochat checkpoint folder is a Hugging Face folder: `tokenizer.json` loads in
`tokenizers`/`transformers` unchanged and gives our ids, and `LlamaForCausalLM`
loaded from the folder gives our logits (max abs diff < 1e-4), for tied and untied
embeddings and grouped-query attention; a mixture of experts with two experts per token
loads as `MixtralForCausalLM` with the same logits.

    python tests/interop/hf_parity.py --ferrochat target/debug/ferrochat
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CORPUS = (
    "The capital of France is Paris. Paris lies on the Seine.\n\n"
    "法国的首都是巴黎。巴黎在塞纳河边。\n\n"
    "Seven times eight is 56. Emoji: 🦀🚀.\n\n"
) * 40

PROMPTS = ["The capital of France is Paris.", "法国的首都是巴黎。", "7 x 8 = 56 🦀"]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def ours_and_diff(fc, model, hf, prompt, out):
    """Our `logits` output for prompt, and its max abs difference from the HF model's."""
    import torch
    run([fc, "logits", "--model", model, "--prompt", prompt, "--output", out])
    with open(out) as f:
        ours = json.load(f)
    with torch.no_grad():
        theirs = hf(torch.tensor([ours["ids"]])).logits[0]
    return ours, (theirs - torch.tensor(ours["logits"])).abs().max().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferrochat", required=True)
    args = ap.parse_args()
    fc = os.path.abspath(args.ferrochat)

    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, LlamaForCausalLM

    failures = []
    with tempfile.TemporaryDirectory() as w:
        corpus = os.path.join(w, "corpus.txt")
        with open(corpus, "w") as f:
            f.write(CORPUS)
        tok = os.path.join(w, "tok")
        data = os.path.join(w, "data")
        run([fc, "tokenizer", "train", "--vocab-size", "300", "--output", tok, "--quiet", corpus])
        run([fc, "data", "prepare", "--tokenizer", tok, "--output", data, "--quiet", "--val-fraction", "0.2", "--split-above", "256", corpus])
        for untied in (False, True):
            model = os.path.join(w, "untied" if untied else "tied")
            cmd = [fc, "pretrain", "--data", data, "--output", model, "--preset", "tiny", "--steps", "3",
                   "--seq", "32", "--batch", "2", "--quiet", "--eval-batches", "1"]
            run(cmd + (["--untied"] if untied else []))
            hf_tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
            auto_tok = AutoTokenizer.from_pretrained(model)
            hf = LlamaForCausalLM.from_pretrained(model, torch_dtype=torch.float32).eval()
            for prompt in PROMPTS:
                ours, diff = ours_and_diff(fc, model, hf, prompt, os.path.join(w, "logits.json"))
                ids = ours["ids"]
                if hf_tok.encode(prompt, add_special_tokens=False).ids != ids:
                    failures.append(f"tokenizers ids differ for {prompt!r}")
                if auto_tok(prompt, add_special_tokens=False)["input_ids"] != ids:
                    failures.append(f"AutoTokenizer ids differ for {prompt!r}")
                if hf_tok.decode(ids) != prompt:
                    failures.append(f"decode differs for {prompt!r}")
                tag = "untied" if untied else "tied"
                print(f"{tag:6} {prompt!r}: {len(ids)} tokens, max |logit diff| = {diff:.2e}")
                if not diff < 1e-4:
                    failures.append(f"{tag} logits differ by {diff} for {prompt!r}")
        # a mixture of experts (top-2 routing) is a Mixtral folder
        from transformers import AutoModelForCausalLM
        moe = os.path.join(w, "moe")
        run([fc, "pretrain", "--data", data, "--output", moe, "--preset", "tiny", "--steps", "3",
             "--seq", "32", "--batch", "2", "--quiet", "--eval-batches", "1",
             "--experts", "4", "--experts-per-token", "2"])
        mx = AutoModelForCausalLM.from_pretrained(moe, dtype=torch.float32).eval()
        for prompt in PROMPTS:
            _, diff = ours_and_diff(fc, moe, mx, prompt, os.path.join(w, "logits.json"))
            print(f"{type(mx).__name__} {prompt!r}: max |logit diff| = {diff:.2e}")
            if type(mx).__name__ != "MixtralForCausalLM" or not diff < 1e-4:
                failures.append(f"mixture of experts: {type(mx).__name__}, logits differ by {diff}")
        # export hf: a clean folder that transformers loads, with a generation config whose
        # end of turn is our <|end|>, and the same logits
        from transformers import GenerationConfig
        exported = os.path.join(w, "exported")
        run([fc, "export", "hf", "--model", model, "--output", exported])
        left = sorted(os.listdir(exported))
        if any(f.startswith("trainer") or f == "meta.json" for f in left):
            failures.append(f"export left training state: {left}")
        gc = GenerationConfig.from_pretrained(exported)
        end = hf_tok.token_to_id("<|end|>")
        if gc.eos_token_id not in (end, [end]):
            failures.append(f"generation_config eos {gc.eos_token_id}, expected {end}")
        ex = LlamaForCausalLM.from_pretrained(exported, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            probe = torch.tensor([hf_tok.encode("Paris is", add_special_tokens=False).ids])
            d = (ex(probe).logits - hf(probe).logits).abs().max().item()
            greedy = ex.generate(probe, max_new_tokens=4, do_sample=False, generation_config=gc)
        if d != 0.0 or greedy.shape[1] < probe.shape[1] + 1:
            failures.append(f"exported model differs (max diff {d}) or does not generate")
        else:
            print(f"export hf: {left}, generation config eos {gc.eos_token_id}, logits identical")
        msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        rendered = auto_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        want = "<|bos|><|user|>Hi<|end|><|assistant|>Hello<|end|><|assistant|>"
        if rendered != want:
            failures.append(f"chat template renders {rendered!r}, expected {want!r}")
        # the ids of whole conversations, as transformers renders them, equal ours
        conversations = [
            [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "Paris.\nIt is on the Seine."},
             {"role": "user", "content": "法国的首都是哪里？"},
             {"role": "assistant", "content": "巴黎。"}],
            [{"role": "user", "content": "fn main() { println!(\"{}\", 7 * 8); }"}],
        ]
        for conv in conversations:
            for gen in (False, True):
                cmd = [fc, "tokenizer", "encode", "--model", model, "--chat",
                       json.dumps({"messages": conv})]
                if gen:
                    cmd.append("--add-generation-prompt")
                ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                theirs = auto_tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=gen)
                if hasattr(theirs, "keys"):
                    theirs = theirs["input_ids"]
                if list(theirs) != ours["ids"]:
                    failures.append(f"chat ids differ (generation prompt {gen}): {list(theirs)} vs {ours['ids']}")
                else:
                    print(f"chat template ids match ({len(ours['ids'])} tokens, generation prompt {gen})")
    if failures:
        sys.exit("FAILED:\n  " + "\n  ".join(failures))
    print("hf parity: ok")


if __name__ == "__main__":
    main()
