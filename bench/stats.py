"""The arithmetic of the bench and what it reads from /proc and RabbitMQ: plain functions, tested without load.

Units: latencies in milliseconds, memory in MiB (1 MiB = 1,048,576 bytes), CPU as % of one core.
"""

import os
import re

MIB = 1024 * 1024


def percentile(values, p):
    """The `p`-th percentile (0 < p <= 100) of `values` by the nearest-rank method (the smallest value with at
    least p % of the values at or below it); None for no values."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = -(-p * len(ordered) // 100)  # ceil(p/100 * n) without floating-point surprises for integer p
    return ordered[max(1, int(rank)) - 1]


def ratio(value, base):
    """value / base, or None when either is missing or the base is not positive."""
    if value is None or not base or base <= 0:
        return None
    return value / base


def rate(count, seconds):
    """count per second, or None for an empty interval."""
    return count / seconds if seconds and seconds > 0 else None


# --- /proc --------------------------------------------------------------------------------------------------


def parse_vm_hwm(status_text):
    """Peak resident set size in bytes from the text of /proc/<pid>/status (its `VmHWM:  N kB` line); None if
    the line is missing (a kernel thread, or a zombie)."""
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB\s*$", status_text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def peak_rss(pid, proc="/proc"):
    """Peak RSS in bytes of process `pid`, or None if it is gone."""
    try:
        with open(os.path.join(proc, str(pid), "status")) as status:
            return parse_vm_hwm(status.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def parse_cpu_ticks(stat_text):
    """utime + stime, in clock ticks, from the text of /proc/<pid>/stat. The command name (field 2) may hold
    spaces and parentheses, so fields are counted after its last ')'."""
    fields = stat_text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid, proc="/proc"):
    """CPU time (user + system) that process `pid` has used so far, in seconds; None if it is gone."""
    try:
        with open(os.path.join(proc, str(pid), "stat")) as stat:
            return parse_cpu_ticks(stat.read()) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError):
        return None


def parse_machine_ticks(stat_text):
    """(busy, total) clock ticks of all CPUs from the text of /proc/stat (its first `cpu` line); idle and
    iowait count as not busy."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            values = [int(value) for value in line.split()[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
            total = sum(values[:8])
            return total - values[3] - values[4], total
    raise ValueError("no cpu line in /proc/stat")


def machine_ticks(proc="/proc"):
    with open(os.path.join(proc, "stat")) as stat:
        return parse_machine_ticks(stat.read())


def cpu_percent(before, after, seconds):
    """% of one core used between two `cpu_seconds` readings `seconds` apart; None if either is missing.
    Readings may also be {pid: seconds} of a group of processes: the pids present in both count."""
    if isinstance(before, dict) and isinstance(after, dict):
        common = [pid for pid in before if before[pid] is not None and after.get(pid) is not None]
        before, after = sum(before[pid] for pid in common), sum(after[pid] for pid in common)
    if before is None or after is None or not seconds:
        return None
    return 100.0 * (after - before) / seconds


def machine_percent(before, after, cores):
    """% of one core (so up to 100 × cores) the whole machine was busy between two `machine_ticks` readings."""
    busy = after[0] - before[0]
    total = after[1] - before[1]
    return 100.0 * cores * busy / total if total > 0 else None


def pids_named(comm, proc="/proc"):
    """The pids whose command name (/proc/<pid>/comm) is `comm`, e.g. the broker's `beam.smp`."""
    pids = []
    for entry in os.listdir(proc):
        if entry.isdigit():
            try:
                with open(os.path.join(proc, entry, "comm")) as name:
                    if name.read().strip() == comm:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


# --- RabbitMQ ----------------------------------------------------------------------------------------------


def queue_owner(queue_name):
    """(service, kind) of the service that consumes `queue_name`, kind "rpc" or "event"; None for a queue that
    is no service's input (RPC reply queues, retry and parked queues).

    nameko 2 names them `rpc-<service>` and `evt-<source>-<event>--<service>.<method>`."""
    if queue_name.startswith("rpc-"):
        return queue_name[len("rpc-") :], "rpc"
    match = re.fullmatch(r"evt-.+--([^.]+)\.[^.]+", queue_name)
    if match:
        return match.group(1), "event"
    return None


def consumed_counts(queues):
    """{service: {"rpc": n, "event": n}}: messages each service has taken from its input queues so far
    (acknowledged, else delivered), from the management API's /api/queues/<vhost> list; plus
    {"instances": consumers on its RPC queue}."""
    counts = {}
    for queue in queues:
        owner = queue_owner(queue.get("name", ""))
        if owner is None:
            continue
        service, kind = owner
        stats = queue.get("message_stats") or {}
        taken = stats.get("ack", stats.get("deliver_get", 0))
        entry = counts.setdefault(service, {"rpc": 0, "event": 0, "instances": 0})
        entry[kind] += taken
        if kind == "rpc":
            entry["instances"] = queue.get("consumers", 0)
    return counts


def consumed_rates(before, after, seconds):
    """Per service, messages taken per second between two `consumed_counts`, in total and per instance of the
    service (its consumers on the RPC queue at the end): [{"service", "instances", "rpc_per_s",
    "events_per_s", "per_instance_per_s"}], busiest first; services that took nothing are left out."""
    rows = []
    for service, end in after.items():
        start = before.get(service, {"rpc": 0, "event": 0})
        rpc = end["rpc"] - start["rpc"]
        events = end["event"] - start["event"]
        if rpc + events <= 0:
            continue
        instances = max(1, end.get("instances") or 1)
        total = (rpc + events) / seconds
        rows.append(
            {
                "service": service,
                "instances": instances,
                "rpc_per_s": rpc / seconds,
                "events_per_s": events / seconds,
                "per_instance_per_s": total / instances,
            }
        )
    return sorted(rows, key=lambda row: -(row["rpc_per_s"] + row["events_per_s"]))


# --- logs --------------------------------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|request_id=[^\]\s]+|0x[0-9a-f]+")


def log_problems(text, top=5):
    """[(count, line)]: the WARNING, ERROR and CRITICAL lines of a scripts.run log (`name | time LEVEL ...`),
    most frequent first, with timestamps and ids taken out so that repeats of one problem count together."""
    counts = {}
    for line in text.splitlines():
        if not re.search(r" (WARNING|ERROR|CRITICAL) ", line):
            continue
        name, _, rest = line.partition("|")
        key = f"{name.strip()}: {_IDS.sub('…', _TIMESTAMP.sub('', rest.strip()))}"[:300]
        counts[key] = counts.get(key, 0) + 1
    return sorted(((count, line) for line, count in counts.items()), key=lambda item: (-item[0], item[1]))[:top]
