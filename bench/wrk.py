"""Run wrk and parse its figures: req/s, p50, p99 (ms), errors. Shared by the benchmarks."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    def row(self) -> str:
        return (
            f"{self.name:<28} {self.rps:>10.0f} req/s   p50 {self.p50_ms:>7.2f} ms   p99 {self.p99_ms:>7.2f} ms"
            f"   ({self.requests} requests, {self.errors} errors)"
        )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    return path


def _find(pattern: str, out: str) -> str:
    """The first group of `pattern` in wrk's report; a report without it is an error, not a crash."""
    if m := re.search(pattern, out):
        return m.group(1)
    raise RuntimeError(f"wrk's report has no match for {pattern!r}:\n{out}")


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(f"unparsed wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run(
    name: str,
    url: str,
    *,
    threads: int = 2,
    connections: int = 32,
    seconds: int = 10,
    headers: dict[str, str] | None = None,
    lua: str | None = None,
    timeout: int = 5,
) -> Result:
    cmd = [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s", "--latency"]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if lua:
            script.write(lua)
            script.flush()
            cmd += ["-s", script.name]
        out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_find(r"\s50%\s+(\S+)", out))
    p99 = _ms(_find(r"\s99%\s+(\S+)", out))
    total = int(_find(r"(\d+) requests in", out))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return Result(name, rps, p50, p99, total, errors)


def post_json_lua(body_expr: str) -> str:
    """A wrk script sending POST with a JSON body built by the Lua expression body_expr."""
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  return wrk.format(nil, nil, nil, {body_expr})
end
"""
