"""`ferrochat import hf` reads folders `transformers` itself wrote: sharded (with an
index) and single-file, f32 and bf16, tied and untied, a tokenizer without ferrochat's
chat tokens and with its own Jinja chat template. The imported checkpoint gives the
logits `LlamaForCausalLM` gives (max abs diff < 1e-4 over the original vocabulary), and
the next stages take it (SFT, then chat).

    python tests/interop/hf_import.py --ferrochat target/debug/ferrochat
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CORPUS = ("The capital of France is Paris. Paris lies on the Seine.\n"
          "法国的首都是巴黎。Seven times eight is 56.\n") * 50
PROMPTS = ["The capital of France is Paris.", "法国的首都是巴黎。"]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "The capital of France?"},
     {"role": "assistant", "content": "Paris."},
     {"role": "user", "content": "法国的首都是？"},
     {"role": "assistant", "content": "巴黎。"}],
]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def hf_folder(path, tied, dtype, shard):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([CORPUS], trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>",
                                  eos_token="<|im_end|>")
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=288, hidden_size=64, intermediate_size=160,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, tie_word_embeddings=tied,
                      bos_token_id=tok.bos_token_id, eos_token_id=[tok.eos_token_id])
    model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(path, max_shard_size="100KB" if shard else "1GB",
                          safe_serialization=True)
    return LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


def hf_ids(tok, msgs, gen):
    out = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def check_template(fc, folder, hf_tok, tag, failures):
    """Our rendering of each conversation equals transformers' apply_chat_template."""
    for msgs in CONVERSATIONS:
        for gen in (False, True):
            cmd = [fc, "tokenizer", "encode", "--model", folder, "--chat",
                   json.dumps({"messages": msgs})]
            ours = json.loads(run(cmd + (["--add-generation-prompt"] if gen else [])))
            theirs = hf_ids(hf_tok, msgs, gen)
            if ours["ids"] != theirs:
                failures.append(f"{tag}: {len(msgs)} messages, generation prompt {gen}: "
                                f"ours {ours['ids']} vs apply_chat_template {theirs}")
            targets = [i for i, m in zip(ours["ids"], ours["mask"]) if m]
            want = "".join(m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant")
            got = hf_tok.decode(targets)
            if got != want:
                failures.append(f"{tag}: training targets {got!r}, expected {want!r}")
    print(f"  {tag}: {len(CONVERSATIONS) * 2} renderings equal apply_chat_template's ids")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferrochat", required=True)
    fc = os.path.abspath(ap.parse_args().ferrochat)
    import torch

    failures = []
    with tempfile.TemporaryDirectory() as w:
        for tied, dtype, shard in [(False, torch.float32, True), (True, torch.bfloat16, False)]:
            tag = f"{'tied' if tied else 'untied'} {str(dtype)[6:]} {'sharded' if shard else 'one file'}"
            src = os.path.join(w, f"hf-{tied}")
            hf = hf_folder(src, tied, dtype, shard)
            files = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
            if shard and len(files) < 2:
                failures.append(f"{tag}: transformers wrote {files}, not shards")
            out = os.path.join(w, f"ours-{tied}")
            print(run([fc, "import", "hf", src, "--output", out]).strip())
            with open(os.path.join(out, "meta.json")) as f:
                meta = json.load(f)
            if meta["data"]["source_chat_template"] != CHATML:
                failures.append(f"{tag}: the source's chat template was not kept in meta.json")
            from transformers import AutoTokenizer
            check_template(fc, out, AutoTokenizer.from_pretrained(src), tag, failures)
            for prompt in PROMPTS:
                ours = json.loads(run([fc, "logits", "--model", out, "--prompt", prompt]))
                with torch.no_grad():
                    theirs = hf(torch.tensor([ours["ids"]])).logits[0]
                # the rows both have: the source's tokens and the chat tokens placed in
                # its padding rows
                v = min(theirs.shape[1], len(ours["logits"][0]))
                diff = (theirs[:, :v] - torch.tensor(ours["logits"])[:, :v]).abs().max().item()
                print(f"  {tag} {prompt!r}: {len(ours['ids'])} tokens, max |logit diff| {diff:.2e}")
                if not diff < 1e-4:
                    failures.append(f"{tag}: logits differ by {diff} for {prompt!r}")
            # the next stages take it: a few SFT steps, then a chat answer
            dialogues = os.path.join(w, "sft.jsonl")
            with open(dialogues, "w") as f:
                for i in range(20):
                    f.write(json.dumps({"messages": [
                        {"role": "user", "content": f"What is {i} plus 1?"},
                        {"role": "assistant", "content": f"{i} plus 1 is {i + 1}."}]}) + "\n")
            chat = os.path.join(w, f"chat-{tied}")
            run([fc, "sft", "--base", out, "--data", dialogues, "--output", chat,
                 "--steps", "3", "--batch", "2", "--quiet"])
            answer = run([fc, "chat", "--model", chat, "--prompt", "What is 3 plus 1?",
                          "--max-tokens", "8", "--temperature", "0"])
            print(f"  {tag}: after 3 SFT steps the chat answers {answer.strip()!r}")
            # the template goes back out: transformers renders the export as we do
            exported = os.path.join(w, f"export-{tied}")
            run([fc, "export", "hf", "--model", chat, "--output", exported])
            check_template(fc, chat, AutoTokenizer.from_pretrained(exported),
                           f"{tag} after SFT, exported", failures)
            with open(os.path.join(exported, "generation_config.json")) as f:
                eos = json.load(f)["eos_token_id"]
            im_end = AutoTokenizer.from_pretrained(exported).convert_tokens_to_ids("<|im_end|>")
            if eos != [im_end] and eos != im_end:
                failures.append(f"{tag}: generation_config eos {eos}, not <|im_end|> ({im_end})")
        # --native-template: ferrochat's own template instead
        native = os.path.join(w, "native")
        run([fc, "import", "hf", src, "--output", native, "--native-template"])
        ids = json.loads(run([fc, "tokenizer", "encode", "--model", native, "--chat",
                              json.dumps({"messages": CONVERSATIONS[0]})]))["ids"]
        want = AutoTokenizer.from_pretrained(native).convert_tokens_to_ids(["<|bos|>", "<|user|>"])
        print(f"  --native-template: starts with {ids[:2]} (<|bos|><|user|> are {want})")
        if ids[:2] != want:
            failures.append(f"--native-template: starts with {ids[:2]}, not <|bos|><|user|> {want}")
        with open(os.path.join(native, "tokenizer_config.json")) as f:
            if json.load(f)["eos_token"] != "<|end|>":
                failures.append("--native-template: tokenizer_config does not end turns with <|end|>")
    if failures:
        sys.exit("FAILED:\n  " + "\n  ".join(failures))
    print("hf import: ok")


if __name__ == "__main__":
    main()
