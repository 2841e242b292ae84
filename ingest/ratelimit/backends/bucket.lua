-- One bucket's state, swapped atomically on the server's clock.
-- KEYS[1]: the bucket, a hash of its version and its state (the JSON of BucketState).
-- ARGV[1]: the version the caller computed from ('' to only read), ARGV[2]: the new
-- state, ARGV[3]: seconds to keep the bucket after this use.
-- Returns {1 if stored else 0, the version now, the state now ('' when stored), the
-- server's time}. The time is a string: Redis truncates Lua numbers to integers.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local version = redis.call('HGET', KEYS[1], 'version') or '0'
if ARGV[1] == version then
  version = tostring(tonumber(version) + 1)
  redis.call('HSET', KEYS[1], 'version', version, 'state', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {1, version, '', now}
end
return {0, version, redis.call('HGET', KEYS[1], 'state') or '', now}
