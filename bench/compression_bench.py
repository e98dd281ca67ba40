#!/usr/bin/env python3
"""Bytes saved and CPU spent compressing a real home-timeline page (docs/decisions.md, compression).

    make run &                                  # the whole stack, gateway on :8000
    .venv/bin/python bench/compression_bench.py [--gateway http://127.0.0.1:8000] [--posts 20] [--n 2000]

Registers five users through the gateway, has one follow the other four, who post --posts posts, waits
for them in the follower's home timeline, and reads that page as a phone would: the bytes on the
wire identity and gzip (what the services send), and the 304 of a revalidation. Then, on that page
in-process: CPU µs per response (process time, best of 5 rounds of --n) for gzip at levels 1/6/9,
for the services' whole CompressionMiddleware, and for brotli / zstd when those modules are
importable (they are not project dependencies: install them in a scratch venv to compare).
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "shared" / "src")]

PASSWORD = "correct horse battery staple"


def cpu_us(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6


def timeline_page(gateway: str, posts: int) -> tuple[bytes, int, int]:
    # post bodies of 8-24 words drawn from the README's vocabulary: text that repeats no more than
    # people's posts do (one repeated sentence would compress far better than a real timeline)
    words = re.findall(r"[A-Za-z]{2,}", (ROOT / "README.md").read_text())
    rng = random.Random(13)
    with httpx.Client(base_url=gateway + "/api/v1", timeout=10) as api:
        tokens = []
        for prefix in ("ana", "ben", "chloe", "dev", "reader"):
            name = f"{prefix}_{uuid.uuid4().hex[:8]}"
            r = api.post(
                "/auth/register",
                json={
                    "username": name,
                    "email": f"{name}@example.com",
                    "password": PASSWORD,
                    "display_name": prefix.title() + " Example",
                },
            )
            r.raise_for_status()
            tokens.append((name, {"Authorization": f"Bearer {r.json()['access']}"}))
        authors, (_reader, reader_auth) = tokens[:-1], tokens[-1]
        for author, _ in authors:
            api.post(f"/users/{author}/follow", headers=reader_auth).raise_for_status()
        for i in range(posts):
            body = " ".join(rng.choice(words) for _ in range(rng.randint(8, 24)))
            api.post("/posts", headers=authors[i % len(authors)][1], json={"body": body}).raise_for_status()
        deadline = time.monotonic() + 60
        while len(api.get("/feed", headers=reader_auth, params={"limit": posts}).json()["results"]) < posts:
            if time.monotonic() > deadline:
                raise SystemExit("the posts did not reach the reader's timeline")
            time.sleep(0.2)
        sizes = {}
        for coding in ("identity", "gzip"):
            with api.stream("GET", "/feed", params={"limit": posts}, headers={**reader_auth, "Accept-Encoding": coding}) as r:
                raw = b"".join(r.iter_raw())
                sizes[coding] = (raw, r.headers.get("etag"))
        identity, etag = sizes["identity"]
        r304 = api.get("/feed", params={"limit": posts}, headers={**reader_auth, "If-None-Match": etag})
        return identity, len(sizes["gzip"][0]), r304.status_code


def middleware_us(body: bytes, n: int) -> float:
    import django
    from django.conf import settings

    settings.configure(COMPRESS_MIN_BYTES=1024, COMPRESS_LEVEL=6, DEFAULT_CHARSET="utf-8", ALLOWED_HOSTS=["*"])
    django.setup()
    from django.http import HttpResponse
    from django.test import RequestFactory

    from shared.compression import CompressionMiddleware

    request = RequestFactory().get("/api/v1/feed", HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    middleware = CompressionMiddleware(lambda req: HttpResponse(body, content_type="application/json"))
    assert middleware(request)["Content-Encoding"] == "gzip"
    return cpu_us(lambda: middleware(request), n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    page, wire_gzip, status_304 = timeline_page(args.gateway, args.posts)
    print(
        f"home timeline, {args.posts} posts: identity {len(page)} B, gzip on the wire {wire_gzip} B "
        f"({100 * (1 - wire_gzip / len(page)):.0f}% saved); revalidation → {status_304}, 0 B body"
    )
    rows = [(f"gzip -{level}", lambda level=level: gzip.compress(page, compresslevel=level, mtime=0)) for level in (1, 6, 9)]
    try:
        import brotli

        rows += [(f"brotli q{q}", lambda q=q: brotli.compress(page, quality=q)) for q in (4, 5, 11)]
    except ImportError:
        print("brotli not importable: skipped")
    try:
        import zstandard

        zstd = {lv: zstandard.ZstdCompressor(level=lv) for lv in (3, 9)}
        rows += [(f"zstd -{lv}", lambda lv=lv: zstd[lv].compress(page)) for lv in zstd]
    except ImportError:
        print("zstandard not importable: skipped")
    print(f"{'coding':<12} {'bytes':>6} {'saved':>6} {'CPU µs':>7}")
    for name, fn in rows:
        size = len(fn())
        print(f"{name:<12} {size:>6} {100 * (1 - size / len(page)):>5.0f}% {cpu_us(fn, args.n):>7.1f}")
    print(f"CompressionMiddleware (gzip -6, headers, Content-Length): {middleware_us(page, args.n):.1f} µs CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
