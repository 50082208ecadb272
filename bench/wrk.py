"""wrk, the HTTP load generator of the bench: finding (or installing) it, feeding it requests, reading its
numbers.

wrk is C with an event loop: one thread drives hundreds of requests per second for a few % of a core, so on a
2-core machine it takes little from the system it measures (a Python generator such as Locust would need
about as much CPU as the gateway it drives). Its latency percentiles come from an HdrHistogram-like record of
every request. It is a closed loop (a new request only when one returns), so a stall delays the requests
behind it instead of being counted against them: the p99 shown is a lower bound under overload.
"""

import json
import os
import re
import shutil
import subprocess

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk.lua")
RESULT_MARK = "BENCH_RESULT "


class BenchError(Exception):
    """The bench cannot go on; the message says why and what to do."""


def ensure_wrk(which=shutil.which, run=subprocess.run, euid=os.geteuid):
    """The path of wrk, installing it with apt-get when missing and running as root; BenchError otherwise."""
    path = which("wrk")
    if path:
        return path
    if euid() != 0:
        raise BenchError("wrk is not installed: install it first (sudo apt-get install -y wrk) and run again")
    install = ["apt-get", "install", "-y", "wrk"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if run(install, **quiet).returncode != 0:  # a machine whose package lists were never fetched
        run(["apt-get", "update"], **quiet)
        run(install, **quiet)
    path = which("wrk")
    if not path:
        raise BenchError(
            "wrk is not installed and `apt-get install -y wrk` did not install it: install it by hand and run again"
        )
    return path


def lua_string(value):
    """`value` as a Lua string literal. Only printable ASCII is accepted: everything the bench sends (paths,
    tokens, JSON bodies) is ASCII, and Lua 5.1 knows no \\u escapes."""
    if not all(" " <= char <= "~" for char in value):
        raise ValueError(f"not printable ASCII: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_requests(requests):
    """The Lua source of a file that returns `requests` ([{"method", "path", "headers"?, "body"?}]) as a table
    for wrk.lua; a body that is not a string is sent as JSON."""
    lines = ["return {"]
    for item in requests:
        headers = dict(item.get("headers") or {})
        body = item.get("body")
        if body is not None and not isinstance(body, str):
            body = json.dumps(body, separators=(",", ":"))
            headers.setdefault("Content-Type", "application/json")
        header_source = ", ".join(
            f"[{lua_string(name)}] = {lua_string(value)}" for name, value in sorted(headers.items())
        )
        fields = [
            f"method = {lua_string(item['method'])}",
            f"path = {lua_string(item['path'])}",
            f"headers = {{{header_source}}}",
        ]
        if body is not None:
            fields.append(f"body = {lua_string(body)}")
        lines.append("  {" + ", ".join(fields) + "},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def wrk_command(wrk, base_url, seconds, connections, threads=1, timeout=5):
    """The command line of one wrk run against `base_url` (the paths come from the request list)."""
    return [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s", "-s", SCRIPT, base_url]


def parse_wrk_output(stdout):
    """wrk.lua's numbers from wrk's output: {"requests", "seconds", "requests_per_s", "p50_ms", "p95_ms",
    "p99_ms", "max_ms", "mean_ms", "non_2xx", "socket_errors", "errors"}. `non_2xx` is wrk's count of responses
    with a status of 400 or more (the API answers no 1xx or 3xx); socket errors are connect, read and write
    errors and timeouts. BenchError if the line is missing (wrk failed to start or the script broke)."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            raw = json.loads(line[len(RESULT_MARK) :])
            break
    else:
        raise BenchError("wrk printed no result line; its output was:\n" + stdout[-2000:])
    seconds = raw["duration_us"] / 1e6
    socket_errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "requests_per_s": raw["requests"] / seconds if seconds > 0 else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "non_2xx": raw["status_errors"],
        "socket_errors": socket_errors,
        "errors": raw["status_errors"] + socket_errors,
    }


def wrk_version(wrk):
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def run_wrk(wrk, base_url, requests, seconds, connections, work_dir, threads=1, timeout=5):
    """One wrk run cycling through `requests`; its parsed numbers (see parse_wrk_output)."""
    data = os.path.join(work_dir, "wrk-requests.lua")
    with open(data, "w") as lua:
        lua.write(lua_requests(requests))
    done = subprocess.run(
        wrk_command(wrk, base_url, seconds, connections, threads, timeout),
        env=dict(os.environ, BENCH_REQUESTS=data),
        capture_output=True,
        text=True,
        timeout=seconds + timeout + 30,
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed (exit code {done.returncode}): {done.stderr.strip()[-1000:]}")
    return parse_wrk_output(done.stdout)
