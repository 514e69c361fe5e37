"""Greedy decode speed of llama.cpp (through llama-cpp-python) on a GGUF file: batch 1,
a random prompt, tokens/s of the decode steps (prefill timed apart), median of runs.

    python bench/llama_cpp_decode.py model.gguf [--prompt-len 16] [--tokens 200] [--runs 3]
"""

import argparse
import json
import random
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=a.gguf, n_ctx=a.prompt_len + a.tokens + 8, n_threads=a.threads,
                n_threads_batch=a.threads, verbose=False, seed=0)
    rng = random.Random(1)
    prompt = [rng.randrange(llm.n_vocab()) for _ in range(a.prompt_len)]
    pre, dec = [], []
    for r in range(a.runs + 1):  # the first is a warm-up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        for _ in range(a.tokens - 1):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([t])
        t2 = time.perf_counter()
        if r:
            pre.append(a.prompt_len / (t1 - t0))
            dec.append((a.tokens - 1) / (t2 - t1))
    print(json.dumps({"prefill_tokens_per_sec": statistics.median(pre),
                      "decode_tokens_per_sec": statistics.median(dec)}))


if __name__ == "__main__":
    main()
