-- GCRA (generic cell rate algorithm) for one rate limit shared by every engine process.
--
-- KEYS[1]  the limit's key; holds the theoretical arrival time (TAT) in microseconds.
-- ARGV[1]  emission interval in microseconds: the period divided by the number of requests.
-- ARGV[2]  burst: how many requests may go at once (at least 1).
--
-- Returns 0 when the request may go now (and records it), otherwise the number of
-- microseconds to wait before asking again (and records nothing).
--
-- The clock is the server's (TIME), so processes on hosts with skewed clocks agree. Redis
-- replicates the script's effects (the SET), not the script, so reading TIME before a write
-- is allowed (Redis 5 and later).
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return allow_at - now
end
-- The key is only needed while the TAT lies ahead; it expires once the limit is idle again.
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
