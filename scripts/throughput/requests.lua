-- wrk script of scripts/throughput.sh: cycles through a request list written
-- by `loadgen --mode seed` (one request a line:
-- METHOD<TAB>PATH<TAB>X-Twilio-Signature or -<TAB>form body), counts the
-- responses outside 2xx and the 503s, and prints one RESULT line.
--   wrk -t2 -c32 -d15s -s requests.lua http://127.0.0.1:18080 -- LIST THREADS
-- Thread k (1-based) of T sends lines k, k+T, k+2T…: the threads never send
-- the same line at the same time, and a list longer than a run is never
-- repeated within it.

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local list, nthreads = args[1], tonumber(args[2])
   if list == nil or nthreads == nil then
      error("usage: wrk ... -s requests.lua URL -- LIST THREADS")
   end
   reqs = {}
   for line in io.lines(list) do
      local method, path, signature, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
      if method == nil then
         error("bad request line in " .. list .. ": " .. line)
      end
      local headers = {}
      if signature ~= "-" then
         headers["X-Twilio-Signature"] = signature
      end
      if body == "" then
         body = nil
      else
         headers["Content-Type"] = "application/x-www-form-urlencoded"
      end
      reqs[#reqs + 1] = wrk.format(method, path, headers, body)
   end
   if #reqs == 0 then
      error("empty request list " .. list)
   end
   step = nthreads
   pos = id - 1
   non2xx = 0
   s503 = 0
end

function request()
   local r = reqs[(pos % #reqs) + 1]
   pos = pos + step
   return r
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if status == 503 then
         s503 = s503 + 1
      end
   end
end

function done(summary, latency, requests)
   local non2xx_total, s503_total = 0, 0
   for _, thread in ipairs(threads) do
      non2xx_total = non2xx_total + thread:get("non2xx")
      s503_total = s503_total + thread:get("s503")
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d non2xx=%d s503=%d socket_errors=%d\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), latency.max,
      non2xx_total, s503_total, e.connect + e.read + e.write + e.timeout))
end
