-- wrk script for benches/measure.sh (benches/load.rs): every request
-- validates one of the API keys in KEYS_FILE (one a line).
--
--   wrk -t T -c C ... -s benches/load.lua http://HOST:PORT -- KEYS_FILE MODE T
--
-- MODE  validate  POST /v1/validate-key, the keys round-robin (each thread
--                 starts at its own offset)
--       auth      GET /v1/auth with the key as bearer token, round-robin
--       once      POST /v1/validate-key, each key at most once over all
--                 threads (thread i of T takes keys i, i+T, ...); a thread
--                 that runs out stops, and done() says so
--
-- Requests are built once in init(); no response() function, so wrk never
-- parses response bodies. wrk calls request() once on thread 0 before the run
-- to check the script: in "once" mode that key goes unused.

local threads, next_id = {}, 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local reqs, n, i, once = {}, 0, 0, false

function init(args)
  local file, mode, nthreads = args[1], args[2], tonumber(args[3])
  assert(file and nthreads and (mode == "validate" or mode == "auth" or mode == "once"),
    "usage: -- KEYS_FILE validate|auth|once THREADS")
  local keys = {}
  for line in io.lines(file) do
    -- Keys are pasted into JSON bodies and headers as they are.
    assert(not line:find("[^%w._-]"), "a key holds characters outside [A-Za-z0-9._-]")
    if line ~= "" then keys[#keys + 1] = line end
  end
  local json = { ["Content-Type"] = "application/json" }
  local function validate(key)
    return wrk.format("POST", "/v1/validate-key", json, '{"api_key":"' .. key .. '"}')
  end
  local function auth(key)
    return wrk.format("GET", "/v1/auth", { ["Authorization"] = "Bearer " .. key })
  end
  once = mode == "once"
  if once then
    for k = id + 1, #keys, nthreads do reqs[#reqs + 1] = validate(keys[k]) end
  else
    for _, key in ipairs(keys) do
      reqs[#reqs + 1] = (mode == "auth") and auth(key) or validate(key)
    end
    i = math.floor(id * #reqs / nthreads)
  end
  n = #reqs
  exhausted = false
end

function request()
  i = i + 1
  if i > n then
    if once then
      -- Out of keys: stop this thread. wrk still wants a request from this
      -- call; a health check is cheap and validates nothing.
      exhausted = true
      wrk.thread:stop()
      return wrk.format("GET", "/health")
    end
    i = 1
  end
  return reqs[i]
end

-- One JSON line of figures for benches/load.rs: wrk's own counts (status:
-- answers >= 400, which wrk prints as "Non-2xx or 3xx responses"), its
-- latency percentiles in microseconds, and whether a thread ran out of keys.
function done(summary, latency, requests)
  local exhausted = false
  for _, thread in ipairs(threads) do
    exhausted = exhausted or thread:get("exhausted") == true
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non_2xx":%d,"socket_errors":%d,"exhausted":%s}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, tostring(exhausted)))
end
