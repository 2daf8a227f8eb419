-- lib.lua: the prelude shared by every balance script. The store prepends it to each script's
-- body when it loads the scripts, so each script stays one atomic unit with no duplicated logic.
--
-- Conventions (DESIGN.md "The store"):
--   KEYS[1] account hash, KEYS[2] sessions hash, KEYS[3] bucket outbox stream,
--   KEYS[4] bucket expiry index (zset), KEYS[5] idempotency key (optional). All carry the
--   subscriber's bucket hash tag, so the script touches one Redis Cluster slot.
--   Money and units are integers. Lua numbers are doubles (exact to 2^53); the Python side
--   refuses anything above 10^15, and every number written back goes through fmt(), because
--   Redis turns a Lua number into a string with "%.14g" (1e+15) and would lose digits.
--   The clock is ARGV (now, Unix ms), never TIME: replicas and AOF replay see the same value.
local K_ACCT, K_SESS, K_OUT, K_EXP, K_IDEM = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function fmt(n)
  return string.format('%d', n)
end

local function num(v)
  return tonumber(v) or 0
end

-- The fixed-shape answer every charging script returns (see ocs/store/store.py, ScriptAnswer).
-- Numbers stay numbers: Redis turns them into integer replies (exact: they are integers below
-- 2^53), which costs far less than formatting each one as a string here.
local function answer(status, a, s, extra)
  extra = extra or {}
  local r = {status, extra.granted or 0, extra.charged or 0, extra.ub or 0,
    0, 0, 0, 0, 0, 0, extra.qb or 0, extra.qa or 0, 0,
    extra.final and 1 or 0, '', '', '', '', 0, '', ''}
  if a then
    r[5], r[6], r[7], r[15], r[20] = a.bal, a.rsv, a.lim, a.st, a.plan or ''
  end
  if s then
    r[8], r[9], r[10], r[13] = s.sv, s.um, s.gb, s.u
    r[16], r[17], r[18], r[19], r[21] = s.svc or '', s.dst or '', s.loc or '', s.t0 or 0,
      s.plan or ''
  end
  return r
end

local function idem_get()
  if K_IDEM then
    local v = redis.call('GET', K_IDEM)
    if v then
      return cmsgpack.unpack(v)
    end
  end
  return nil
end

local function idem_put(ans, ttl_ms)
  if K_IDEM and ttl_ms > 0 then
    redis.call('SET', K_IDEM, cmsgpack.pack(ans), 'PX', fmt(ttl_ms))
  end
  return ans
end

local function load_account()
  local raw = redis.call('HGETALL', K_ACCT)
  if #raw == 0 then
    return nil
  end
  local a = {}
  for i = 1, #raw, 2 do
    a[raw[i]] = raw[i + 1]
  end
  a.bal, a.rsv, a.lim = num(a.bal), num(a.rsv), num(a.lim)
  a.ver, a.nexp = num(a.ver), num(a.nexp)
  if a.bk and a.bk ~= '' then
    a.buckets = cmsgpack.unpack(a.bk)
  else
    a.buckets = {}
  end
  a.dirty_buckets = false
  return a
end

-- Write back what scripts change. Buckets that are used up, or expired and not held, go.
local function save_account(a, now)
  a.ver = a.ver + 1
  local args = {'bal', fmt(a.bal), 'rsv', fmt(a.rsv), 'ver', fmt(a.ver), 'nexp', fmt(a.nexp),
    'up', fmt(now)}
  if a.dirty_buckets then
    local keep = {}
    for _, b in ipairs(a.buckets) do
      local expired = b.x > 0 and b.x <= now
      b.free = nil
      if b.r > 0 or (b.n > 0 and not expired) then
        keep[#keep + 1] = b
      end
    end
    a.buckets = keep
    args[#args + 1] = 'bk'
    args[#args + 1] = cmsgpack.pack(keep)
  end
  redis.call('HSET', K_ACCT, unpack(args))
end

-- One event in the bucket's outbox: the journal that CDRs, audit and consumers read.
-- `ver` is the account version after the script: events written before save_account() (lazy
-- expiries) pass a.ver + 1, the rest are written after it.
local function emit(kind, msisdn, now, a, fields, ver)
  local args = {'t', kind, 'sub', msisdn, 'ts', fmt(now), 'bal', fmt(a.bal), 'rsv', fmt(a.rsv),
    'ver', fmt(ver or a.ver)}
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if type(v) == 'number' then
      v = fmt(v)
    end
    args[#args + 1] = fields[i]
    args[#args + 1] = v
  end
  redis.call('XADD', K_OUT, '*', unpack(args))
end

local function get_session(sid)
  local raw = redis.call('HGET', K_SESS, sid)
  if raw then
    return cmsgpack.unpack(raw)
  end
  return nil
end

local function put_session(sid, s)
  redis.call('HSET', K_SESS, sid, cmsgpack.pack(s))
end

-- Keep the expiry index's score at (a lower bound of) the earliest session expiry.
local function index_expiry(a, msisdn, x)
  if a.nexp == 0 or x < a.nexp then
    a.nexp = x
    redis.call('ZADD', K_EXP, fmt(x), msisdn)
  end
end

-- Return a session's held money and bucket units to the account.
local function release_hold(a, s)
  a.rsv = a.rsv - s.hm
  s.hm = 0
  if s.gb > 0 then
    for _, b in ipairs(a.buckets) do
      local held = s.hb[b.id]
      if held then
        b.r = b.r - held
      end
    end
    a.dirty_buckets = true
  end
  s.hb, s.gb, s.g = {}, 0, 0
end

-- Release every session whose hold time has passed (lazily here, and from the sweeper).
local function expire_due(a, msisdn, now)
  if a.nexp == 0 or now < a.nexp then
    return 0
  end
  local raw = redis.call('HGETALL', K_SESS)
  local n, nexp = 0, 0
  for i = 1, #raw, 2 do
    local s = cmsgpack.unpack(raw[i + 1])
    if s.x <= now then
      local held = s.hm
      release_hold(a, s)
      redis.call('HDEL', K_SESS, raw[i])
      n = n + 1
      emit('expire', msisdn, now, a, {'sid', raw[i], 'svc', s.svc, 'rel', held, 'u', s.u,
        'mc', s.mc}, a.ver + 1)
    elseif nexp == 0 or s.x < nexp then
      nexp = s.x
    end
  end
  a.nexp = nexp
  a.touched = n > 0
  if n == 0 then
    -- Nothing expired (the index only held a lower bound): record the true next expiry.
    redis.call('HSET', K_ACCT, 'nexp', fmt(nexp))
  end
  if nexp == 0 then
    redis.call('ZREM', K_EXP, msisdn)
  else
    redis.call('ZADD', K_EXP, fmt(nexp), msisdn)
  end
  return n
end

-- Barring and suspension. flags: 'o' outgoing service, 'f' free service.
local function denied(a, flags)
  if a.st == 'suspended' then
    return true
  end
  local free = string.find(flags, 'f', 1, true) ~= nil
  if a.st == 'barred-all' then
    return not free
  end
  if a.st == 'barred-outgoing' then
    return string.find(flags, 'o', 1, true) ~= nil
  end
  return false
end

-- Buckets usable for a service now, in consumption order (priority, then earliest expiry).
-- `own` is the holding session's current bucket hold, which counts as free for it.
local function usable_buckets(a, svc, now, own)
  local list = {}
  own = own or {}
  for _, b in ipairs(a.buckets) do
    b.free = b.n - b.r + (own[b.id] or 0)
    if b.svc == svc and (b.x == 0 or b.x > now) and b.free > 0 then
      list[#list + 1] = b
    end
  end
  table.sort(list, function(p, q)
    if p.p ~= q.p then
      return p.p < q.p
    end
    local px, qx = p.x == 0 and math.huge or p.x, q.x == 0 and math.huge or q.x
    if px ~= qx then
      return px < qx
    end
    return p.id < q.id
  end)
  return list
end

local function available_units(list)
  local n = 0
  for _, b in ipairs(list) do
    n = n + b.free
  end
  return n
end

local function available_money(a)
  return a.bal - a.rsv + a.lim
end

-- Hold a grant of n units for session s: bq from buckets (-1: the script decides, which it can
-- only do when buckets cover all or none of it), the rest as money costing cn.
-- What the session already holds counts as available (a new slice replaces the old one);
-- nothing changes unless the whole grant fits.
-- Returns nil when held, or the quote the engine needs: (bucket units, money) available.
local function hold(a, s, svc, now, n, cn, bq)
  local list = usable_buckets(a, svc, now, s.hb)
  local bav = available_units(list)
  local avail = available_money(a) + s.hm
  local b = bq
  if bq < 0 then
    b = math.min(n, bav)
    if b > 0 and b < n then
      return {b, avail}
    end
  end
  if b > bav or (b < n and cn > avail) then
    return {math.min(n, bav), avail}
  end
  if b == n then
    cn = 0
  end
  release_hold(a, s)
  local left = b
  for _, bk in ipairs(list) do
    if left == 0 then
      break
    end
    local take = math.min(left, bk.n - bk.r)
    bk.r = bk.r + take
    s.hb[bk.id] = take
    left = left - take
  end
  if b > 0 then
    a.dirty_buckets = true
  end
  s.gb, s.g, s.hm = b, n, cn
  a.rsv = a.rsv + cn
  return nil
end

-- Debit `used` units of session s: held bucket units first, then money costing `cost`
-- (the engine rated it from the session's money cursor). Overuse is charged in full.
local function settle(a, s, used, cost)
  local ub = math.min(used, s.gb)
  if ub > 0 then
    local left = ub
    for _, b in ipairs(a.buckets) do
      local held = s.hb[b.id]
      if held and left > 0 then
        local take = math.min(left, held)
        b.n = b.n - take
        left = left - take
      end
    end
    a.dirty_buckets = true
  end
  release_hold(a, s)
  a.bal = a.bal - cost
  s.u = s.u + used
  s.um = s.um + (used - ub)
  s.mc = s.mc + cost
  s.sv = s.sv + 1
  return ub
end

-- Consume units of an event straight from buckets (no session), in consumption order.
local function take_from_buckets(a, svc, now, n)
  local left = n
  for _, b in ipairs(usable_buckets(a, svc, now)) do
    if left == 0 then
      break
    end
    local take = math.min(left, b.free)
    b.n = b.n - take
    left = left - take
  end
  a.dirty_buckets = true
end

-- A refusal or a quote changes nothing the request asked for; lazy expiries it did on the way
-- are kept (their sessions and events are already written).
local function unchanged(status, a, s, extra)
  if a and a.touched then
    save_account(a, tonumber(ARGV[1]))
  end
  return answer(status, a, s, extra)
end

local function has_flag(flags, f)
  return string.find(flags, f, 1, true) ~= nil
end
