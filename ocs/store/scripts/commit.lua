-- commit: debit the units a session used and, when n > 0, hold the next slice in the same step.
-- ARGV: now, msisdn, request key, idempotency ttl ms, session id, used units, cost of the
--       used units in money (rated from the session's money cursor, after the units its held
--       buckets cover), expected session version (-1: unknown), n next units (0: none),
--       cost of n, bucket units quoted (-1: script decides), hold ms, flags.
-- Usage is debited in full even past the credit limit or while barred: it already happened.
-- Status OK; OKQ when the usage was debited but the next slice needs a quote; OKD when the
-- usage was debited and the next slice is denied (barred).
local now, msisdn, rk, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local sid, used, cost, esv = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local n, cn, bq = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local hold_ms, flags = tonumber(ARGV[12]), ARGV[13]

local prev = idem_get()
if prev then
  return prev
end
local a = load_account()
if not a then
  return answer('NOSUB')
end
expire_due(a, msisdn, now)
local s = get_session(sid)
if s == nil then
  return unchanged('NOSESS', a)
end
if esv ~= s.sv then
  return unchanged('STALE', a, s)
end
local ub = settle(a, s, used, cost)
local status, granted, q = 'OK', 0, nil
if n > 0 then
  if denied(a, flags) then
    status = 'OKD'
  else
    q = hold(a, s, s.svc, now, n, cn, bq)
    if q then
      status = 'OKQ'
    else
      granted = n
    end
  end
end
s.x = now + hold_ms
put_session(sid, s)
index_expiry(a, msisdn, s.x)
save_account(a, now)
emit('commit', msisdn, now, a, {'sid', sid, 'svc', s.svc, 'rk', rk, 'u', used, 'ub', ub,
  'amt', -cost, 'g', granted, 'gb', s.gb, 'hm', s.hm})
local extra = {granted = granted, charged = cost, ub = ub, final = has_flag(flags, 'F')}
if q then
  extra.qb, extra.qa = q[1], q[2]
end
return idem_put(answer(status, a, s, extra), ttl)
