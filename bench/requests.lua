-- wrk script for `make bench`: sends each line of a file once, as a POST.
--
-- wrk -s bench/requests.lua URL -- PATH FILE THREADS RUN
--
-- Each line of FILE is a bearer token, a tab, and a JSON body. Thread t of THREADS sends
-- lines t, t + THREADS, ... in turn, each with an Idempotency-Key made of RUN, the thread
-- and the line. A thread whose lines have run out sends GET /healthz instead, counted
-- apart as "spare", so that a run never sends a body twice. At the end one line starting
-- with WRK_RESULT gives the counts and latencies as JSON.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  run = args[4]
  local thread_count = tonumber(args[3])
  lines = {}
  local number = 0
  for line in io.lines(args[2]) do
    if number % thread_count == id then
      lines[#lines + 1] = line
    end
    number = number + 1
  end
  sent = 0
  created = 0
  refused = 0
  spare = 0
end

function request()
  sent = sent + 1
  local line = lines[sent]
  if line == nil then
    return wrk.format("GET", "/healthz")
  end
  local tab = line:find("\t", 1, true)
  local headers = {
    ["Authorization"] = "Bearer " .. line:sub(1, tab - 1),
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-" .. id .. "-" .. sent,
  }
  return wrk.format("POST", path, headers, line:sub(tab + 1))
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  elseif status == 200 then
    spare = spare + 1
  else
    refused = refused + 1
    if refused <= 3 then
      io.stderr:write("unexpected answer " .. status .. ": " .. body:sub(1, 200) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local totals = { created = 0, refused = 0, spare = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us": %d, "created": %d, "refused": %d, "spare": %d, '
      .. '"socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.duration, totals.created, totals.refused, totals.spare,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)
  ))
end
