//! The Lua scripts of the Redis store, each hashed once and sent by its
//! SHA1 (`EVALSHA`). Each is one atomic step on one key's slot: the fencing
//! check with the write, the lease with its token, a threshold with its
//! merge (see `store::Store` for the stamps they keep).

use std::sync::LazyLock;

use deadpool_redis::redis;

/// Lua helpers every script starts with. A key's value is
/// `<stamp>|<entry JSON>`, or `<stamp>|` for a tombstone; a value from
/// before stamps (plain JSON) has stamp 0. Stamps are Redis `TIME` in
/// microseconds, at least one above the key's (numbers stay below 2^53,
/// exact in Lua's doubles, and are written with `%.0f`, never `tostring`).
pub(super) const LUA_PRELUDE: &str = r#"
local function stamp_of(v)
  if not v then return 0 end
  local s = string.match(v, '^(%d+)|')
  if s then return tonumber(s) end
  return 0
end
local function next_stamp(floor)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if now <= floor then now = floor + 1 end
  return now
end
local function fmt(n) return string.format('%.0f', n) end
"#;

/// Takes the lease when it is free (or, with force, when it only holds a
/// failure marker), under a new stamp above the entry's: `OK:<token>`, or
/// the lease's current value.
pub(super) const ACQUIRE: &str = r#"
local v = redis.call('GET', KEYS[1])
if (not v) or (ARGV[2] == '1' and string.sub(v, 1, 7) == 'failed:') then
  local token = fmt(next_stamp(stamp_of(redis.call('GET', KEYS[2]))))
  redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
  return 'OK:' .. token
end
return v
"#;

/// Extends the lease if it is still ours.
pub(super) const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Writes an entry if its stamp is above the key's (and, with an expected
/// stamp, only if the key's is exactly that): the fencing check and the
/// write in one step.
pub(super) const PUT: &str = r#"
local cur = stamp_of(redis.call('GET', KEYS[1]))
local s = tonumber(ARGV[1])
if ARGV[4] ~= '' and cur ~= tonumber(ARGV[4]) then return 0 end
if s <= cur then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// Replaces an entry by a tombstone with a new stamp, and drops its lease.
pub(super) const INVALIDATE: &str = r#"
local s = next_stamp(stamp_of(redis.call('GET', KEYS[1])))
redis.call('SET', KEYS[1], fmt(s) .. '|', 'PX', ARGV[1])
redis.call('DEL', KEYS[2])
return fmt(s)
"#;

/// A new stamp above the key's.
pub(super) const STAMP: &str = r#"
return fmt(next_stamp(stamp_of(redis.call('GET', KEYS[1]))))
"#;

/// Merges a widget's thresholds with what the caller knew (so a lost hash
/// is written back, never restarted), then, with a kind, sets that one to a
/// new stamp above them all. Returns `[current, hard, soft]`.
pub(super) const GENERATION: &str = r#"
local function num(x) return tonumber(x) or 0 end
local kept = redis.call('HMGET', KEYS[1], 'current', 'hard', 'soft')
local cur = math.max(num(kept[1]), num(ARGV[2]))
local hard = math.max(num(kept[2]), num(ARGV[3]))
local soft = math.max(num(kept[3]), num(ARGV[4]))
if ARGV[1] ~= '' then
  cur = next_stamp(math.max(cur, hard, soft))
  if ARGV[1] == 'hard' then hard = cur else soft = cur end
end
if num(kept[1]) ~= cur or num(kept[2]) ~= hard or num(kept[3]) ~= soft then
  redis.call('HSET', KEYS[1], 'current', fmt(cur), 'hard', fmt(hard), 'soft', fmt(soft))
end
return {fmt(cur), fmt(hard), fmt(soft)}
"#;

/// Sets a hash field to a number unless it holds a greater one.
pub(super) const HSET_MAX: &str = r#"
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
if tonumber(ARGV[2]) > held then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"#;

/// Releases the lease only if we own it; optionally leaves a failure marker.
pub(super) const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] ~= '' then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('DEL', KEYS[1])
  end
  return 1
end
return 0
"#;

pub(super) fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LUA_PRELUDE}{body}"))
}

/// The scripts, hashed once.
pub(super) static ACQUIRE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(ACQUIRE));
pub(super) static RENEW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(RENEW));
pub(super) static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(RELEASE));
pub(super) static PUT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(PUT));
pub(super) static INVALIDATE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(INVALIDATE));
pub(super) static STAMP_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(STAMP));
pub(super) static GENERATION_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(GENERATION));
pub(super) static HSET_MAX_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(HSET_MAX));

/// Every script's text, for loading them ahead of traffic.
pub(super) const ALL: [&str; 8] = [
    ACQUIRE, RENEW, PUT, INVALIDATE, STAMP, GENERATION, HSET_MAX, RELEASE,
];
