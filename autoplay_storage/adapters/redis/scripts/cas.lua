#!lua
-- The compare-and-set step of every state write (docs/redis.md, "Atomicity").
-- The shebang (Redis 7+) makes a server that is out of memory refuse the whole
-- script up front, rather than fail between two of its writes.
-- KEYS: every key the step touches, the user's state first (cluster-safe declaration).
-- ARGV[1]: the state the caller computed from, byte for byte ('' = it saw none)
-- ARGV[2]: a snapshot key being frozen ('' = none); if it exists, nothing is written
-- ARGV[3]: a key to read back after the writes ('' = none)
-- ARGV[4]: the user's tombstone key ('' = none), ARGV[5]: when the session started
-- ARGV[6..]: the writes, each as its argument count followed by its arguments
-- Reply: {0, state} stale (nothing written), {1[, read]} written, {2, state, frozen} frozen before,
-- {3, tombstone} the user was erased after the session started (nothing written)
if ARGV[4] ~= '' then
  local tomb = redis.call('GET', ARGV[4])
  if tomb and (tomb == 'erasing' or tonumber(ARGV[5]) <= tonumber(tomb)) then return {3, tomb} end
end
local state = redis.call('GET', KEYS[1])
if ARGV[2] ~= '' then
  local frozen = redis.call('GET', ARGV[2])
  if frozen then return {2, state or false, frozen} end
end
if ARGV[1] == '' then
  if state then return {0, state} end
elseif state ~= ARGV[1] then
  return {0, state or false}
end
local i = 6
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
if ARGV[3] ~= '' then return {1, redis.call('GET', ARGV[3])} end
return {1}
