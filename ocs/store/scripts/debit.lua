-- debit: a one-shot event (SMS, content, a CDR's call): rate, then debit n units at once,
-- from the service's buckets first. flags: o outgoing, f free, X forced (the usage already
-- happened: debit past the credit limit and whatever the barring state).
-- ARGV: now, msisdn, request key, idempotency ttl ms, service, n units, cost of the units
--       not covered by buckets, bucket units quoted (-1: script decides), flags, the plan the
--       engine rated with (PLAN when it is not the account's).
local now, msisdn, rk, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local svc, n, cn, bq, flags = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  ARGV[9]
local force = has_flag(flags, 'X')

local prev = idem_get()
if prev then
  return prev
end
local a = load_account()
if not a then
  return answer('NOSUB')
end
expire_due(a, msisdn, now)
if a.plan ~= ARGV[10] then
  return unchanged('PLAN', a)
end
if not force and denied(a, flags) then
  return unchanged('DENIED', a)
end
local bav = available_units(usable_buckets(a, svc, now))
local avail = available_money(a)
local b = bq
if bq < 0 then
  b = math.min(n, bav)
  if b > 0 and b < n then
    return unchanged('QUOTE', a, nil, {qb = b, qa = avail})
  end
end
if b > bav then
  return unchanged('QUOTE', a, nil, {qb = math.min(n, bav), qa = avail})
end
local cost = cn
if b == n then
  cost = 0
end
if not force and cost > avail then
  return unchanged('QUOTE', a, nil, {qb = b, qa = avail})
end
if b > 0 then
  take_from_buckets(a, svc, now, b)
end
a.bal = a.bal - cost
save_account(a, now)
emit('debit', msisdn, now, a, {'svc', svc, 'rk', rk, 'u', n, 'ub', b, 'amt', -cost,
  'forced', force and '1' or '0'})
return idem_put(answer('OK', a, nil, {charged = cost, ub = b}), ttl)
