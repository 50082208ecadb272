"""`make bench PROFILE=<scenario>`: py-spy samples the gateway and the scenario's main service while it runs,
and the report lists where their CPU went. py-spy is not a dependency of the project: `pip install py-spy`.

py-spy reads another process's stacks from outside (no code change, no restart); `--nonblocking` keeps it from
pausing the process at each sample, so the profiled run's throughput stays close to an unprofiled one. Idle
stacks (the eventlet hub waiting in epoll) are left out by py-spy, so the shares are shares of busy time.
"""

import os
import shutil
import subprocess
import sys

RATE = 50  # samples per second: plenty for a 15 s window, little load on two cores


def py_spy():
    """The path of py-spy (next to this interpreter, else on PATH), or None."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.path.exists(beside) else shutil.which("py-spy")


def start(py_spy_path, pid, seconds, output):
    """A py-spy process sampling `pid` for `seconds` into `output` (collapsed stacks, one per line)."""
    return subprocess.Popen(
        [
            py_spy_path,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(RATE),
            "--nonblocking",
            "--nolineno",
            "--format",
            "raw",
            "--output",
            output,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def short_frame(frame):
    """`function (path/to/site-packages/pkg/module.py)` → `function (pkg/module.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def summarize_collapsed(text, top=12):
    """(samples, {"self": [(frame, %)], "total": [(frame, %)]}) from py-spy's raw output: lines of
    `frame;frame;...;frame count`, outermost first. Self time goes to a stack's last frame; total time to every
    distinct frame on the stack."""
    samples = 0
    own, under = {}, {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        frames = [short_frame(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        samples += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            under[frame] = under.get(frame, 0) + count

    def ranked(counts):
        best = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
        return [(frame, 100.0 * count / samples) for frame, count in best]

    return samples, {"self": ranked(own), "total": ranked(under)}
