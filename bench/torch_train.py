"""PyTorch reference for `ferrochat bench train`.

Builds Hugging Face's own LlamaForCausalLM from the config.json that
`ferrochat bench train --output DIR` wrote, and times the same training step:
batch x seq random tokens, forward, cross-entropy, backward, grad-norm clip,
AdamW; f32 on the CPU with the same number of threads. Prints tokens/s
(median of the timed steps) as the last line, as JSON, with PyTorch's own f32
matmul peak on the model's shapes (the same three products ours is measured on).
"""

import argparse
import json
import os
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", help="folder with the benchmarked model's config.json")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward (fp32 master weights)")
    args = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    config = LlamaConfig(**cfg)
    config._attn_implementation = "sdpa"
    dev = torch.device(args.device)
    model = LlamaForCausalLM(config).float().train().to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for i in range(args.warmup + args.steps):
        x = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=dev)
        y = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=dev)
        sync()
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        dt = time.perf_counter() - t
        if i >= args.warmup:
            times.append(dt)
    step = statistics.median(times)
    peak = matmul_peak(torch, config, args.batch * args.seq, dev, sync)
    tps = args.batch * args.seq / step
    # model FLOPs per token: 6 x parameters (embedding excluded when tied... counted as
    # nanochat does: all matmul parameters) plus attention, 12 x layers x d x seq
    d = config.hidden_size
    flops_tok = 6 * params + 12 * config.num_hidden_layers * d * args.seq
    where = torch.cuda.get_device_name() if dev.type == "cuda" else f"{args.threads} threads"
    print(f"PyTorch {torch.__version__} eager{' bf16 autocast' if args.bf16 else ''}, {where}: "
          f"{tps:.0f} tokens/s (median step {step:.3f}s, {params/1e6:.2f}M parameters, "
          f"{tps * flops_tok / 1e12:.1f} model TFLOP/s); its f32 matmul peak on the model's "
          f"shapes: {peak:.1f} GFLOP/s")
    print(json.dumps({"reference": "pytorch-eager-hf-llama", "torch": torch.__version__,
                      "device": where, "bf16": args.bf16, "threads": args.threads, "params": params,
                      "step_secs_median": step, "tokens_per_sec": tps,
                      "model_tflops": tps * flops_tok / 1e12,
                      "matmul_peak_gflops": peak}))


def matmul_peak(torch, config, rows, dev, sync):
    """Best f32 matmul rate on the model's own shapes, as `ferrochat bench train` measures
    its own: a linear layer (x @ w^T, what nn.Linear runs) of (rows, C) -> F,
    (rows, F) -> C and (rows, C) -> C, median of 5 each."""
    c, f = config.hidden_size, config.intermediate_size
    best = 0.0
    for m, k, n in [(rows, c, f), (rows, f, c), (rows, c, c)]:
        a = torch.randn(m, k, device=dev)
        w = torch.randn(n, k, device=dev)
        torch.nn.functional.linear(a, w)
        times = []
        for _ in range(5):
            sync()
            t = time.perf_counter()
            torch.nn.functional.linear(a, w)
            sync()
            times.append(time.perf_counter() - t)
        best = max(best, 2 * m * k * n / statistics.median(times) / 1e9)
    return best

if __name__ == "__main__":
    main()
