-- wrk script of the load and engine-comparison checks: POST the AdmissionReview in $REVIEW
-- to the URL's path or, with $PATHS, to a path picked at random per request; at the end one
-- line on stderr: RESULT requests socket-errors non-2xx p50-µs p99-µs duration-µs.
local f = assert(io.open(os.getenv("REVIEW")))
local body = f:read("*a")
f:close()
local paths = {}
for p in string.gmatch(os.getenv("PATHS") or "", "%S+") do paths[#paths + 1] = p end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = body
if #paths > 0 then
  request = function()
    return wrk.format("POST", paths[math.random(#paths)])
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.stderr:write(string.format("RESULT %d %d %d %.0f %.0f %d\n", summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
