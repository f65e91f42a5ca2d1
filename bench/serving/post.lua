-- wrk script: POST one fixed JSON body, count HTTP errors, print the summary as one JSON line.
--
-- The body is read from the file named by BENCH_BODY_FILE at load time, so wrk's default
-- init() formats the request once and sends the same bytes every time (no per-request Lua).
-- The path comes from the URL given on the command line.

local path = os.getenv("BENCH_BODY_FILE")
assert(path, "set BENCH_BODY_FILE to the file holding the request body")
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per thread (each thread has its own Lua state); read back in done() through thread:get.
http_errors = 0
first_error = nil

function response(status, headers, body)
  if status >= 400 then
    http_errors = http_errors + 1
    if first_error == nil then
      first_error = tostring(status) .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

local function quote(text)
  text = string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. text .. '"'
end

function done(summary, latency, requests)
  local http, sample = 0, nil
  for _, thread in ipairs(threads) do
    http = http + (thread:get("http_errors") or 0)
    sample = sample or thread:get("first_error")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"http":%d},'
      .. '"first_error":%s,'
      .. '"latency_us":{"min":%d,"mean":%.2f,"max":%d,"stdev":%.2f,'
      .. '"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, http,
    sample and quote(sample) or "null",
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
end
