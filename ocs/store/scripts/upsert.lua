-- upsert: create a subscriber, or update its plan, credit limit, state and unit buckets.
-- ARGV: now, msisdn, request key, idempotency ttl ms, mode (create | update), plan,
--       credit limit, state, opening balance (create), buckets to add (msgpack list of
--       {id, svc, n, p, x}; a known id gets the units added and takes the new p and x),
--       the account's own balance thresholds ('-': none of its own, use the plan's).
--       An empty plan, limit, state or thresholds means "keep".
local now, msisdn, rk, ttl = ARGV[1] + 0, ARGV[2], ARGV[3], ARGV[4] + 0
local mode, plan, lim, st, bal, bk = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local thr = ARGV[11]

local prev = idem_get()
if prev then
  return prev
end
local a = load_account()
if mode == 'create' then
  if a then
    return answer('EXISTS', a)
  end
  a = {msisdn = msisdn, bal = tonumber(bal), rsv = 0, lim = 0, st = 'active', plan = plan,
    ver = 0, nexp = 0, buckets = {}, dirty_buckets = true, evaluate = true, crossing = false,
    nb0 = false}
  -- The fields every request reads (load_account) or writes (ver, up, bal, rsv) first
  -- (save_account below gives each its value): a small hash is a listpack, which HMGET and
  -- HSET search from its start, field by field, so the order is what a request pays for
  -- (~5k instructions of ~307k: docs/architecture.md, Performance 18). Accounts created
  -- before keep theirs.
  redis.call('HSET', K_ACCT, 'bal', bal, 'rsv', '0', 'ver', '0', 'up', fmt(now), 'nexp', '0',
    'lim', '0', 'st', 'active', 'plan', plan, 'bk', '', 'nb', 'none', 'blo', '', 'bhi', '',
    'thv', '', 'th', '', 'msisdn', msisdn, 'cr', fmt(now))
elseif not a then
  return answer('NOSUB')
else
  expire_due(a, msisdn, now)
end
local changes = {}
if plan ~= '' then
  a.plan = plan
  redis.call('HSET', K_ACCT, 'plan', plan)
  changes[#changes + 1] = 'plan'
  changes[#changes + 1] = plan
  a.evaluate = true
end
if thr ~= '' then
  if thr == '-' then
    redis.call('HDEL', K_ACCT, 'thr')
  else
    redis.call('HSET', K_ACCT, 'thr', thr)
  end
  changes[#changes + 1] = 'thresholds'
  changes[#changes + 1] = thr
  a.evaluate = true
end
if lim ~= '' then
  a.lim = tonumber(lim)
  local text = fmt(a.lim)
  redis.call('HSET', K_ACCT, 'lim', text)
  changes[#changes + 1] = 'lim'
  changes[#changes + 1] = text
end
if st ~= '' then
  a.st = st
  redis.call('HSET', K_ACCT, 'st', st)
  changes[#changes + 1] = 'st'
  changes[#changes + 1] = st
end
if bk ~= '' then
  local added = {}
  for _, nb in ipairs(cmsgpack.unpack(bk)) do
    local found = nil
    for _, b in ipairs(a.buckets) do
      if b.id == nb.id then
        found = b
      end
    end
    if found then
      found.n, found.p, found.x = found.n + nb.n, nb.p, nb.x
    else
      a.buckets[#a.buckets + 1] = {id = nb.id, svc = nb.svc, n = nb.n, r = 0, p = nb.p, x = nb.x}
    end
    added[#added + 1] = nb.id .. ':' .. nb.svc .. ':' .. fmt(nb.n)
  end
  changes[#changes + 1] = 'buckets'
  changes[#changes + 1] = table.concat(added, ',')
  a.dirty_buckets = true
end
save_account(a, now)
emit_named(mode, msisdn, a, a.tv, unpack(changes))
return idem_put(answer('OK', a), ttl)
