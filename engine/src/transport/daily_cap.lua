-- A daily cap shared by every engine process: counts the requests of one calendar day.
--
-- KEYS[1]  the day's counter, e.g. <prefix>:ratelimit:<api>:2025-01-31.
-- ARGV[1]  the cap: requests allowed that day.
-- ARGV[2]  the counter's time to live in seconds (longer than a day, so that a counter
--          outlives its day in every process whatever the clocks say).
--
-- Returns the day's count including this request when it may go, or -1 when the cap is
-- reached (the counter is left unchanged, so refusals cost nothing).
local cap = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1])) or 0
if used >= cap then
  return -1
end
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return n
