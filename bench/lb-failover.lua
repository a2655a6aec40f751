-- wrk script for bench/lb-vs-haproxy's failover runs: the requests of bench.lua (set
-- PB_CLOSE=1 for one new connection per request), plus one machine-readable STALL line:
-- how many requests took at least PB_STALL_MS milliseconds (default 500).
--   PB_BENCH_LUA  path of bench.lua (default: bench/bench.lua, relative to the working dir)
dofile(os.getenv("PB_BENCH_LUA") or "bench/bench.lua")

local stall_us = (tonumber(os.getenv("PB_STALL_MS") or "") or 500) * 1000
local bench_done = done

function done(summary, latency, requests)
   bench_done(summary, latency, requests) -- the RESULT line
   -- latency(i) is the i-th distinct recorded value (µs) and how many requests had it.
   local stalled, counted = 0, 0
   for i = 1, #latency do
      local value, count = latency(i)
      counted = counted + count
      if value >= stall_us then
         stalled = stalled + count
      end
   end
   io.write(string.format("STALL stall_ms=%d stalled=%d recorded=%d\n",
      math.floor(stall_us / 1000), stalled, counted))
end
