-- reserve: open a session, or give an open session a new slice, holding credit for n units.
-- ARGV: now, msisdn, request key, answer kept until (now + session TTL, Unix ms),
--       session id, service, n units,
--       cost of n units in money (rated by the engine from the session's money cursor),
--       bucket units quoted (-1: script decides), expected session version (0: new,
--       -1: unknown), hold ms (validity + grace), flags (o outgoing, f free, F final),
--       destination, location, the plan the engine rated with (new sessions: must be the
--       account's plan, else PLAN tells the engine which it is), the thresholds' generation
--       (no fingerprint: it is "reserve:<service>", see lib.lua).
local now, msisdn, rk = ARGV[1] + 0, ARGV[2], ARGV[3]
local sid, svc, n, cn = ARGV[5], ARGV[6], ARGV[7] + 0, ARGV[8] + 0
local bq, esv, hold_ms, flags = ARGV[9] + 0, ARGV[10] + 0, ARGV[11] + 0, ARGV[12]

REQ_FP = 'reserve:' .. ARGV[6] -- (see idem_get)
local af = '\255r' .. rk -- (this request's answer: see session_lookup)
local prev, raw, counts = session_lookup(sid, af)
if prev then
  return prev
end
local a = load_account()
if not a then
  return answer('NOSUB')
end
if expire_due(a, msisdn, now) > 0 then
  raw = redis.call('HGET', K_SESS, sid) -- (it may have been one of those released)
end
local s = raw and cmsgpack.unpack(raw)
local open, adue = open_state(a, counts)
if not s then
  if esv ~= 0 then
    return unchanged('NOSESS', a)
  end
  if a.plan ~= ARGV[15] then
    return unchanged('PLAN', a)
  end
  s = {svc = svc, u = 0, um = 0, mc = 0, g = 0, gb = 0, hm = 0, hb = {}, sv = 0, x = 0,
    t0 = now, dst = ARGV[13], loc = ARGV[14], plan = a.plan}
  open = open and open + 1
elseif esv ~= s.sv then
  return unchanged('STALE', a, s)
end
if denied(a, flags) then
  return unchanged('DENIED', a, s)
end
local qb, qa = hold(a, s, s.svc, now, n, cn, bq)
if qb then
  return unchanged('QUOTE', a, s, 0, 0, 0, qb, qa)
end
s.sv = s.sv + 1
s.x = now + hold_ms
index_expiry(a, msisdn, s.x)
local state = answer_due(a, msisdn, now, open, adue, counts)
save_account(a, now)
local final = string.find(flags, 'F', 1, true) ~= nil
local ans = answer('OK', a, s, n, 0, 0, 0, 0, final)
if state then
  redis.call('HSET', K_SESS, sid, cmsgpack.pack(s), af, answer_value(ans), OPEN_FIELD, state)
else
  redis.call('HSET', K_SESS, sid, cmsgpack.pack(s), af, answer_value(ans))
end
-- (the grant is n and the hold its cost or nothing, written as received: see lib.lua)
emit('reserve', msisdn, a, a.tv, 'sid', sid, 'svc', s.svc, 'rk', rk, 'g', ARGV[7],
  'gb', fmt(s.gb), 'hm', s.hm == 0 and '0' or ARGV[8])
return ans
