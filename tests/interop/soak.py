"""A bounded soak of `ferrochat serve` on loopback: many concurrent clients for a fixed
time, streaming answers (a share of them hang up mid-stream), posting ratings and reading
the model list. Afterwards: no request failed that should not have, the server's memory
grew by less than a bound, and every rating the server acknowledged is in its database.

    python tests/interop/soak.py --base-url http://127.0.0.1:PORT --pid PID --db FILE \
        [--clients 64] [--seconds 20] [--max-growth-mb 64]

Prints the figures and PASS/FAIL lines; exits non-zero on failure.
"""

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import time

import httpx


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def client(i, base, deadline, acked, counts):
    rng = random.Random(i)
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        while time.monotonic() < deadline:
            action = rng.random()
            if action < 0.55:
                body = {"model": "chat", "stream": True, "max_tokens": rng.randint(4, 48),
                        "temperature": 0.8, "seed": rng.randint(0, 1 << 30),
                        "messages": [{"role": "user", "content": f"Question {rng.randint(0, 999)}?"}]}
                hang_up = rng.random() < 0.3
                async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        counts["errors"] += 1
                        continue
                    events = 0
                    done = False
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            events += 1
                            if line == "data: [DONE]":
                                done = True
                            if hang_up and events >= 2:
                                break
                    if hang_up and not done:
                        counts["disconnects"] += 1
                    elif done:
                        counts["streams"] += 1
                    else:
                        counts["errors"] += 1
            elif action < 0.85:
                q = f"soak question {i} {rng.randint(0, 50)}"
                body = {"model": "chat", "messages": [{"role": "user", "content": q}],
                        "answer": f"answer {rng.randint(0, 1 << 20)}",
                        "rating": rng.choice(["up", "down"]), "comment": ""}
                r = await http.post("/v1/feedback/ratings", json=body)
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                else:
                    counts["errors"] += 1
            else:
                r = await http.get("/v1/models")
                counts["reads"] += 1
                if r.status_code != 200:
                    counts["errors"] += 1


async def soak(base, clients, seconds):
    acked = []
    counts = {"streams": 0, "disconnects": 0, "reads": 0, "errors": 0}
    deadline = time.monotonic() + seconds
    await asyncio.wait_for(
        asyncio.gather(*(client(i, base, deadline, acked, counts) for i in range(clients))),
        timeout=seconds + 120)
    return acked, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-growth-mb", type=float, default=64)
    a = ap.parse_args()
    # a short warm-up, so the allocator's first growth is not counted as a leak
    asyncio.run(soak(a.base_url, a.clients, 2))
    before = rss_mb(a.pid)
    t0 = time.monotonic()
    acked, counts = asyncio.run(soak(a.base_url, a.clients, a.seconds))
    wall = time.monotonic() - t0
    time.sleep(1)
    after = rss_mb(a.pid)
    with sqlite3.connect(a.db) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM ratings")}
    lost = [i for i in acked if i not in stored]
    requests = counts["streams"] + counts["disconnects"] + counts["reads"] + len(acked) + counts["errors"]
    print(f"soak: {a.clients} clients for {wall:.0f} s: {requests} requests "
          f"({counts['streams']} streams completed, {counts['disconnects']} hung up mid-stream, "
          f"{len(acked)} ratings acknowledged, {counts['reads']} reads), {counts['errors']} errors; "
          f"server memory {before:.0f} -> {after:.0f} MB; ratings lost {len(lost)}")
    print(json.dumps({"clients": a.clients, "seconds": wall, "requests": requests, **counts,
                      "ratings_acked": len(acked), "ratings_lost": len(lost),
                      "rss_before_mb": before, "rss_after_mb": after}))
    ok = True
    for name, cond in [("no request failed", counts["errors"] == 0),
                       ("every acknowledged rating is stored", not lost),
                       (f"memory grew less than {a.max_growth_mb} MB", after - before < a.max_growth_mb),
                       ("clients hung up mid-stream and the server went on", counts["disconnects"] > 0
                        and counts["streams"] > 0)]:
        print(f"{'PASS' if cond else 'FAIL'} {name}")
        ok &= cond
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
