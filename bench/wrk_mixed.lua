-- The mixed workload for wrk (run by bench/wrk_mixed.py, which sets the variables below).
--
-- One wrk thread drives one connection (wrk -t N -c N), so per-thread state is
-- per-connection state: the connection creates its own session on node KATO_NODE,
-- then repeats observe x4 (1-5 symbols "s0".."s4999", sorted, like bench/corpus.py),
-- predictions, learn. Every response status is checked: anything but 200 counts as
-- an error (and a lost session id makes the connection create a new one).

local node = os.getenv("KATO_NODE") or "bench-10k"
local vocabulary = tonumber(os.getenv("KATO_VOCABULARY") or "5000")
local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

-- Globals, not locals: done() reads them from each thread with thread:get().
session = nil
step = 0
errors = 0
observes, predictions, learns, creates = 0, 0, 0, 0
local bodies = {}
local next_body = 1
local create_body = '{"node_id":"' .. node .. '"}'
local json_headers = { ["Content-Type"] = "application/json" }

function init(args)
   math.randomseed(1000 + id)
   for i = 1, 4096 do
      local n = math.random(1, 5)
      local symbols = {}
      for j = 1, n do symbols[j] = "s" .. (math.random(0, vocabulary - 1)) end
      table.sort(symbols)
      bodies[i] = '{"strings":["' .. table.concat(symbols, '","') .. '"]}'
   end
end

function request()
   if session == nil then
      return wrk.format("POST", "/sessions", json_headers, create_body)
   end
   step = step + 1
   if step <= 4 then
      local body = bodies[next_body]
      next_body = next_body % #bodies + 1
      return wrk.format("POST", "/sessions/" .. session .. "/observe", json_headers, body)
   elseif step == 5 then
      return wrk.format("GET", "/sessions/" .. session .. "/predictions")
   end
   step = 0
   return wrk.format("POST", "/sessions/" .. session .. "/learn", json_headers, "{}")
end

function response(status, headers, body)
   if status ~= 200 then
      errors = errors + 1
      if session == nil then return end
   end
   if session == nil then
      session = string.match(body, '"session_id"%s*:%s*"([^"]+)"')
      creates = creates + 1
      step = 0
      return
   end
   if step == 0 then learns = learns + 1
   elseif step == 5 then predictions = predictions + 1
   else observes = observes + 1 end
end

function done(summary, latency, requests)
   local errs, obs, preds, lrn, cr = 0, 0, 0, 0, 0
   for _, t in ipairs(threads) do
      errs = errs + t:get("errors")
      obs = obs + t:get("observes")
      preds = preds + t:get("predictions")
      lrn = lrn + t:get("learns")
      cr = cr + t:get("creates")
   end
   local e = summary.errors
   local socket_errors = e.connect + e.read + e.write + e.timeout
   -- One machine-readable line for bench/wrk_mixed.py.
   io.write(string.format(
      "WRK_RESULT requests=%d duration_us=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f "
         .. "non200=%d socket_errors=%d observes=%d predictions=%d learns=%d creates=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, errs, socket_errors, obs, preds, lrn, cr))
end
