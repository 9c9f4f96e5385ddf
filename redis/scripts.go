package redis

import "github.com/redis/rueidis"

// Every session write is one of these scripts, so that the write, its index
// updates and the SPUBLISH of its event happen in one atomic step: no crash can
// separate a change from its event. The event goes to the session's shard
// channel (the user's, for created), whose hash tag is the one of the keys
// the script writes, so that it stays on the script's slot. docs/redis.md
// states each contract.
//
// Time fields are Unix nanoseconds as decimal strings; lt compares two of them
// without turning them into Lua numbers (doubles, which would lose precision).
// Index scores and key expiries are Unix milliseconds.
//
// Event payloads come from Go. Where the script knows something Go does not
// (the user or version of a session being deleted, touched or expired), Go
// leaves a placeholder that fill replaces: "@@sb:session_id@@" and
// "@@sb:user_id@@" as JSON strings (the first occurrence: those fields come
// before any application data in the payload) and the version
// 18446744073709551615 (the last occurrence: it comes after the updates).
const luaPrelude = `
local function lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function minns(a, b)
  if lt(b, a) then return b end
  return a
end
local function ms(ns)
  if #ns <= 6 then return 0 end
  return tonumber(string.sub(ns, 1, -7))
end
local function subfirst(s, old, new)
  local i, j = string.find(s, old, 1, true)
  if not i then return s end
  return string.sub(s, 1, i - 1) .. new .. string.sub(s, j + 1)
end
local function sublast(s, old, new)
  local at, stop, from = nil, nil, 1
  while true do
    local i, j = string.find(s, old, from, true)
    if not i then break end
    at, stop, from = i, j, j + 1
  end
  if not at then return s end
  return string.sub(s, 1, at - 1) .. new .. string.sub(s, stop + 1)
end
local function fill(payload, flags, sid, uid, ver)
  if string.find(flags, 's', 1, true) then payload = subfirst(payload, '"@@sb:session_id@@"', cjson.encode(sid)) end
  if string.find(flags, 'u', 1, true) then payload = subfirst(payload, '"@@sb:user_id@@"', cjson.encode(uid)) end
  if string.find(flags, 'v', 1, true) then payload = sublast(payload, '"version":18446744073709551615', '"version":' .. ver) end
  return payload
end
local function extend(key, at)
  local cur = redis.call('PEXPIRETIME', key)
  if cur < at then redis.call('PEXPIREAT', key, at) end
end
-- indexdeadline puts id into the expiry index key at score (Unix ms). When
-- that is earlier than every deadline the index held, it publishes the score on the
-- channel named like the index: the expiry claim, which reads an index only
-- when its earliest deadline is due, learns of the new one (a plain PUBLISH:
-- every node hears it, and it is rare, a write that moves an index's
-- earliest deadline forward).
local function indexdeadline(key, score, id)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  redis.call('ZADD', key, score, id)
  if not first[2] or tonumber(score) < tonumber(first[2]) then
    redis.call('PUBLISH', key, string.format('%.0f', tonumber(score)))
  end
end
local function hmap(h)
  local m = {}
  for i = 1, #h, 2 do m[h[i]] = h[i + 1] end
  return m
end
`

// create: KEYS session, user index, expiry index.
// ARGV channel, payload, id, score, key expiry (ms), field/value pairs...
// Returns 1, or 0 if the session exists.
const luaCreate = luaPrelude + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[3])
extend(KEYS[2], tonumber(ARGV[5]))
indexdeadline(KEYS[3], ARGV[4], ARGV[3])
redis.call('SPUBLISH', ARGV[1], ARGV[2])
return 1
`

// update: KEYS session, user index, expiry index.
// ARGV channel, payload, previous version, new last_seen_at, score, key
// expiry, id, user id, field/value pairs...
// Returns {1} when written, {0} if the session is gone, {-1} on a version
// conflict, {-2, last_seen_at, expires_at} if a touch recorded after the
// caller's read must be kept (the caller retries with it), {-3} if the user ID
// differs.
const luaUpdate = luaPrelude + `
local cur = redis.call('HMGET', KEYS[1], 'version', 'last_seen_at', 'expires_at', 'user_id')
if not cur[1] then return {0} end
if cur[1] ~= ARGV[3] then return {-1} end
if cur[4] ~= ARGV[8] then return {-3} end
if lt(ARGV[4], cur[2]) then return {-2, cur[2], cur[3]} end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
extend(KEYS[2], tonumber(ARGV[6]))
indexdeadline(KEYS[3], ARGV[5], ARGV[7])
redis.call('SPUBLISH', ARGV[1], ARGV[2])
return {1}
`

// touch: KEYS session, expiry index.
// ARGV channel, payload, fill flags, seen, expires_at, if-seen-before, grace
// (ms), id, user index key prefix.
// Returns 1 when written, 0 when the condition failed (a touch within the
// interval, or the session is already past its deadline), -1 if it is gone.
const luaTouch = luaPrelude + `
local cur = redis.call('HMGET', KEYS[1], 'last_seen_at', 'expires_at', 'absolute_expires_at', 'version', 'user_id')
if not cur[1] then return -1 end
if not lt(cur[1], ARGV[6]) then return 0 end
if not lt(ARGV[4], minns(cur[2], cur[3])) then return 0 end
redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[4], 'expires_at', ARGV[5])
local dl = ms(minns(ARGV[5], cur[3]))
local at = dl + tonumber(ARGV[7])
redis.call('PEXPIREAT', KEYS[1], at)
indexdeadline(KEYS[2], dl, ARGV[8])
extend(ARGV[9] .. cur[5], at)
redis.call('SPUBLISH', ARGV[1], fill(ARGV[2], ARGV[3], ARGV[8], cur[5], cur[4]))
return 1
`

// delete: KEYS session, expiry index.
// ARGV channel, payload, fill flags, id, user index key prefix.
// Returns the deleted hash as a flat array, empty if it was gone.
const luaDelete = luaPrelude + `
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {} end
local m = hmap(h)
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[5] .. m['user_id'], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('SPUBLISH', ARGV[1], fill(ARGV[2], ARGV[3], ARGV[4], m['user_id'], m['version']))
return h
`

// rotate: KEYS old session, new session, user index, expiry index.
// ARGV deleted channel, deleted payload, created channel, created payload,
// old id, new id, score, key expiry, user id, previous version, new
// last_seen_at, field/value pairs...
// Returns 1, 0 if the old session is gone, -1 if the new ID is taken, -2 if
// the old session changed since the caller's read (its version moved or a
// later touch was recorded), -3 if the user differs. Nothing is copied from
// the old hash: every field of the new one, data and scopes included, comes
// from the caller's read, which the version check proves current.
const luaRotate = luaPrelude + `
local cur = redis.call('HMGET', KEYS[1], 'user_id', 'version', 'last_seen_at')
local u = cur[1]
if not u then return 0 end
if u ~= ARGV[9] then return -3 end
if cur[2] ~= ARGV[10] or lt(ARGV[11], cur[3]) then return -2 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[5])
redis.call('HSET', KEYS[2], unpack(ARGV, 12))
redis.call('PEXPIREAT', KEYS[2], ARGV[8])
redis.call('SADD', KEYS[3], ARGV[6])
extend(KEYS[3], tonumber(ARGV[8]))
indexdeadline(KEYS[4], ARGV[7], ARGV[6])
redis.call('SPUBLISH', ARGV[1], ARGV[2])
redis.call('SPUBLISH', ARGV[3], ARGV[4])
return 1
`

// claim: KEYS expiry index of one shard.
// ARGV channel prefix (the session ID completes it), payload template, fill
// flags, now (ns), now (ms), session key
// prefix, user index key prefix, candidate ids...
// Claims each candidate still in the index whose deadline is at or before
// now: removes it from every index, deletes it and publishes its expired
// event. The ZREM makes each claim happen once, whoever runs the script.
// Returns the claimed hashes as flat arrays.
const luaClaim = luaPrelude + `
local out = {}
local nowms = tonumber(ARGV[5])
for i = 8, #ARGV do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= nowms then
    local skey = ARGV[6] .. id
    local h = redis.call('HGETALL', skey)
    if #h == 0 then
      redis.call('ZREM', KEYS[1], id)
      redis.call('SPUBLISH', ARGV[1] .. id, fill(ARGV[2], ARGV[3], id, '', '0'))
    else
      local m = hmap(h)
      if not lt(ARGV[4], minns(m['expires_at'], m['absolute_expires_at'])) then
        redis.call('ZREM', KEYS[1], id)
        redis.call('DEL', skey)
        redis.call('SREM', ARGV[7] .. m['user_id'], id)
        redis.call('SPUBLISH', ARGV[1] .. id, fill(ARGV[2], ARGV[3], id, m['user_id'], m['version']))
        table.insert(out, h)
      end
    end
  end
end
return out
`

type scripts struct {
	create, update, touch, del, rotate, claim *rueidis.Lua
}

func newScripts() scripts {
	return scripts{
		create: rueidis.NewLuaScript(luaCreate),
		update: rueidis.NewLuaScript(luaUpdate),
		touch:  rueidis.NewLuaScript(luaTouch),
		del:    rueidis.NewLuaScript(luaDelete),
		rotate: rueidis.NewLuaScript(luaRotate),
		claim:  rueidis.NewLuaScript(luaClaim),
	}
}
