-- The one wrk script of `make bench`: cycles through the requests listed in the Lua file named by the
-- BENCH_REQUESTS environment variable (written by bench/wrk.py), and prints the run's numbers as one JSON line.
-- No response() callback: defining one makes wrk hand every response to Lua, which costs the generator CPU.

local requests = {}
local next_index = 1

function init(args)
  local listed = dofile(os.getenv("BENCH_REQUESTS"))
  for i, r in ipairs(listed) do
    requests[i] = wrk.format(r.method, r.path, r.headers, r.body)
  end
  if #requests == 0 then
    error("no requests listed in " .. os.getenv("BENCH_REQUESTS"))
  end
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
