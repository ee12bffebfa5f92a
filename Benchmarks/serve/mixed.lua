-- wrk script of the serve suite's "mixed" workload: a new connection for every request
-- (Connection: close), one request in 200 to /slow (about 50 ms of CPU), the rest to /.
-- How a server spreads new connections over its workers decides the p99 latency: one that
-- lets a busy worker take connections makes fast requests wait behind slow ones.
local slow, fast
local count = 0

init = function(args)
    -- Formatted here, once wrk knows the Host header.
    slow = wrk.format("GET", "/slow", {["Connection"] = "close"})
    fast = wrk.format("GET", "/", {["Connection"] = "close"})
end

request = function()
    count = count + 1
    if count % 200 == 0 then
        return slow
    end
    return fast
end
