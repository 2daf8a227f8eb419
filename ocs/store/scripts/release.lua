-- release: end a session, debiting its final usage and freeing what is left of its hold.
-- ARGV: now, msisdn, request key, idempotency ttl ms, session id, used units, cost of the
--       used units in money, expected session version (-1: unknown).
local now, msisdn, rk, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local sid, used, cost, esv = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

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
local held = s.hm
local ub = settle(a, s, used, cost)
redis.call('HDEL', K_SESS, sid)
save_account(a, now)
emit('release', msisdn, now, a, {'sid', sid, 'svc', s.svc, 'rk', rk, 'u', used, 'ub', ub,
  'amt', -cost, 'rel', held, 'tu', s.u, 'mc', s.mc})
return idem_put(answer('OK', a, s, {charged = cost, ub = ub}), ttl)
