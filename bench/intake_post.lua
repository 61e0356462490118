-- wrk's requests for bench/intake.py: POST /v1/erasures, a new user id each time
-- (BENCH_PREFIX-<n>), with BENCH_TOKEN as the bearer token when set; prints one JSON line.
local counter = 0
local prefix = os.getenv("BENCH_PREFIX") or "w"
local token = os.getenv("BENCH_TOKEN")
local agent = os.getenv("BENCH_AGENT") or "intake-agent"
local headers = {["Content-Type"] = "application/json"}
if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end

request = function()
  counter = counter + 1
  local body = '{"user_id":"' .. prefix .. '-' .. counter .. '","agent_id":"' .. agent .. '"}'
  return wrk.format("POST", "/v1/erasures", headers, body)
end

done = function(summary, latency, requests)
  local sock = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "not_202": %d, "socket_errors": %d, "p50_ms": %f, "p99_ms": %f}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status, sock,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
