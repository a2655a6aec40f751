-- wrk script for the peer benchmark.
--   PB_URI   absolute URI to put on the request line (forward-proxy form),
--            e.g. http://127.30.0.10:8080/small ; empty = normal origin-form path
--   PB_HOST  Host header to send with PB_URI (the origin, not the proxy)
--   PB_CLOSE "1" = send "Connection: close" (one new TCP connection per request)
-- done() prints one machine-readable RESULT line for a harness to parse.
local uri = os.getenv("PB_URI") or ""
if uri ~= "" then
   wrk.path = uri
   wrk.headers["Host"] = os.getenv("PB_HOST") or "127.30.0.10:8080"
end
if os.getenv("PB_CLOSE") == "1" then
   wrk.headers["Connection"] = "close"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d " ..
      "err_connect=%d err_read=%d err_write=%d err_timeout=%d err_status=%d\n",
      summary.requests, summary.duration,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.timeout, e.status))
end
