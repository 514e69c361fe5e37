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
    if failures:
        sys.exit("FAILED:\n  " + "\n  ".join(failures))
    print("hf import: ok")


if __name__ == "__main__":
    main()
