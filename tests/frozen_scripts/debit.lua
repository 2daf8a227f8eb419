-- debit: a one-shot event (SMS, content, a CDR's call): rate, then debit n units at once,
-- from the service's buckets first. flags: o outgoing, f free, X forced (the usage already
-- happened: debit past the credit limit and whatever the barring state).
-- ARGV: now, msisdn, request key, idempotency ttl ms, service, n units, cost of the units
--       not covered by buckets, bucket units quoted (-1: script decides), flags, the plan the
--       engine rated with (PLAN when it is not the account's), the destination (the number
--       called, as the request gave it; carried in the event for billing).
local now, msisdn, rk, ttl = ARGV[1] + 0, ARGV[2], ARGV[3], ARGV[4] + 0
local svc, n, cn, bq, flags = ARGV[5], ARGV[6] + 0, ARGV[7] + 0, ARGV[8] + 0, ARGV[9]
local force = string.find(flags, 'X', 1, true) ~= nil

-- Consume units of an event straight from buckets (no session), in consumption order.
local function take_from_buckets(a, svc, now, n)
  local left = n
  local list = usable_buckets(a, svc, now)
  for _, b in ipairs(list) do
    if left == 0 then
      break
    end
    local take = math.min(left, b.free)
    b.n = b.n - take
    left = left - take
  end
  a.dirty_buckets = true
end

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
local _, bav = usable_buckets(a, svc, now)
local avail = a.bal - a.rsv + a.lim
local b = bq
if bq < 0 then
  b = math.min(n, bav)
  if b > 0 and b < n then
    return unchanged('QUOTE', a, nil, 0, 0, 0, b, avail)
  end
end
if b > bav then
  return unchanged('QUOTE', a, nil, 0, 0, 0, math.min(n, bav), avail)
end
local cost = cn
if b == n then
  cost = 0
end
if not force and cost > 0 and cost > avail then -- (what costs nothing needs no credit)
  return unchanged('QUOTE', a, nil, 0, 0, 0, b, avail)
end
if b > 0 then
  take_from_buckets(a, svc, now, b)
end
a.bal = a.bal - cost
save_account(a, now)
-- (numbers as received where the event carries them unchanged: see lib.lua)
emit('debit', msisdn, a, a.tv, 'svc', svc, 'rk', rk, 'u', ARGV[6], 'ub', fmt(b),
  'amt', cost > 0 and '-' .. ARGV[7] or fmt(-cost), 'forced', force and '1' or '0',
  'dst', ARGV[11] or '')
return idem_put(answer('OK', a, nil, 0, cost, b), ttl)
