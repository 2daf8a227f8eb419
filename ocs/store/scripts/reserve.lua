-- reserve: open a session, or give an open session a new slice, holding credit for n units.
-- ARGV: now, msisdn, request key, idempotency ttl ms, session id, service, n units,
--       cost of n units in money (rated by the engine from the session's money cursor),
--       bucket units quoted (-1: script decides), expected session version (0: new,
--       -1: unknown), hold ms (validity + grace), flags (o outgoing, f free, F final),
--       destination, location, the plan the engine rated with (new sessions: must be the
--       account's plan, else PLAN tells the engine which it is).
local now, msisdn, rk, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local sid, svc, n, cn = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local bq, esv, hold_ms, flags = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12]

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
  if esv ~= 0 then
    return unchanged('NOSESS', a)
  end
  if a.plan ~= ARGV[15] then
    return unchanged('PLAN', a)
  end
  s = {svc = svc, u = 0, um = 0, mc = 0, g = 0, gb = 0, hm = 0, hb = {}, sv = 0, x = 0,
    t0 = now, dst = ARGV[13], loc = ARGV[14], plan = a.plan}
elseif esv ~= s.sv then
  return unchanged('STALE', a, s)
end
if denied(a, flags) then
  return unchanged('DENIED', a, s)
end
local q = hold(a, s, s.svc, now, n, cn, bq)
if q then
  return unchanged('QUOTE', a, s, {qb = q[1], qa = q[2]})
end
s.sv = s.sv + 1
s.x = now + hold_ms
put_session(sid, s)
index_expiry(a, msisdn, s.x)
save_account(a, now)
emit('reserve', msisdn, now, a, {'sid', sid, 'svc', s.svc, 'rk', rk, 'g', n, 'gb', s.gb,
  'hm', s.hm})
return idem_put(answer('OK', a, s, {granted = n, final = has_flag(flags, 'F')}), ttl)
