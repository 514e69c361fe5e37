"""The official `openai` Python client, unchanged, against `ferrochat serve`.

    python tests/interop/openai_client.py --base-url http://127.0.0.1:PORT --api-key KEY

Checks the routes the client uses (models, chat completions plain and streamed, text
completions, n, seed, stop, usage), that errors arrive as the client's own exception
types, and a bounded load: 32 concurrent streaming clients, each answer complete.
Prints one line per check; exits non-zero on the first failure.
"""

import argparse
import asyncio
import statistics
import sys
import time

import openai
from openai import AsyncOpenAI, OpenAI


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--clients", type=int, default=32)
    a = ap.parse_args()
    base = a.base_url.rstrip("/") + "/v1"
    client = OpenAI(base_url=base, api_key=a.api_key, max_retries=0, timeout=60)

    models = [m.id for m in client.models.list()]
    check("models.list", "chat" in models, str(models))
    model = "chat"
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]

    r = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    check("chat completion", isinstance(text, str) and r.choices[0].finish_reason in ("stop", "length"),
          repr(text[:60]))
    u = r.usage
    check("usage", u.prompt_tokens > 0 and 1 <= u.completion_tokens <= 24
          and u.total_tokens == u.prompt_tokens + u.completion_tokens, str(u))

    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("streamed chat equals the plain answer", streamed == text, f"{streamed!r} vs {text!r}")
    check("stream ends with usage", chunks[-1].usage is not None and chunks[-1].usage.total_tokens == u.total_tokens)

    kw = dict(model=model, messages=messages, max_tokens=16, temperature=1.0, seed=7, n=2)
    a1 = [c.message.content for c in client.chat.completions.create(**kw).choices]
    a2 = [c.message.content for c in client.chat.completions.create(**kw).choices]
    check("n=2 with a seed repeats", len(a1) == 2 and a1 == a2, str(a1))

    if len(text) >= 4:
        stop = text[1:3]
        s = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0, stop=[stop])
        check("stop string", s.choices[0].message.content == text[: text.find(stop)]
              and s.choices[0].finish_reason == "stop", repr(s.choices[0].message.content))

    c = client.completions.create(model=model, prompt="The capital of", max_tokens=8, temperature=0)
    check("text completion", isinstance(c.choices[0].text, str) and c.object == "text_completion")

    for name, call, exc in [
        ("unknown model is NotFoundError",
         lambda: client.chat.completions.create(model="nope", messages=messages), openai.NotFoundError),
        ("bad temperature is BadRequestError",
         lambda: client.chat.completions.create(model=model, messages=messages, temperature=5),
         openai.BadRequestError),
        ("wrong key is AuthenticationError",
         lambda: OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list(),
         openai.AuthenticationError),
    ]:
        try:
            call()
            check(name, False, "no error")
        except exc as e:
            check(name, True, str(e)[:80])

    asyncio.run(load(base, a.api_key, a.clients))


async def load(base, key, clients):
    client = AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)

    async def one(i):
        t0 = time.perf_counter()
        first = None
        finish = None
        n = 0
        stream = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}],
            max_tokens=32, temperature=0.8, seed=i, stream=True)
        async for chunk in stream:
            if not chunk.choices:
                continue
            ch = chunk.choices[0]
            if ch.delta.content:
                n += 1
                if first is None:
                    first = time.perf_counter() - t0
            if ch.finish_reason:
                finish = ch.finish_reason
        return finish, first, time.perf_counter() - t0

    t0 = time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(clients))), timeout=180)
    wall = time.perf_counter() - t0
    finished = [r for r in results if r[0] in ("stop", "length")]
    ttft = [r[1] for r in results if r[1] is not None]
    check(f"{clients} concurrent streaming clients all complete", len(finished) == clients,
          f"{len(finished)}/{clients} in {wall:.1f} s, time to first text p50 "
          f"{statistics.median(ttft) if ttft else float('nan'):.3f} s")


if __name__ == "__main__":
    main()
