-- release: end a session, debiting its final usage and freeing what is left of its hold.
-- ARGV: now, msisdn, request key, answer kept until (now + session TTL, Unix ms),
--       session id, used units, cost of the
--       used units in money, expected session version (-1: unknown), the thresholds'
--       generation (no fingerprint: it is "release:<used>", see lib.lua).
local now, msisdn, rk = ARGV[1] + 0, ARGV[2], ARGV[3]
local sid, used, cost, esv = ARGV[5], ARGV[6] + 0, ARGV[7] + 0, ARGV[8] + 0

REQ_FP = 'release:' .. ARGV[6] -- (see idem_get)
local done, a, s, counts = open_session(msisdn, now, sid, esv, '\255e' .. rk)
if done then
  return done
end
local held = s.hm
local ub = settle(a, s, used, cost)
local open, adue = open_state(a, counts)
if open == 0 then
  open = false -- (the count was wrong: no longer known)
  redis.call('HDEL', K_SESS, sid, OPEN_FIELD)
else
  redis.call('HDEL', K_SESS, sid)
end
local state = answer_due(a, msisdn, now, open and open - 1, adue, counts)
save_account(a, now)
local ans = answer('OK', a, s, 0, cost, ub)
-- (the answer outlives the session, for late replays: see session_lookup)
if state then
  redis.call('HSET', K_SESS, '\255e' .. rk, answer_value(ans), OPEN_FIELD, state)
else
  redis.call('HSET', K_SESS, '\255e' .. rk, answer_value(ans))
end
-- (numbers as received where the event carries them unchanged: see lib.lua)
emit('release', msisdn, a, a.tv, 'sid', sid, 'svc', s.svc, 'rk', rk, 'u', ARGV[6],
  'ub', fmt(ub), 'amt', cost > 0 and '-' .. ARGV[7] or fmt(-cost), 'rel', fmt(held),
  'tu', fmt(s.u), 'mc', fmt(s.mc), 'dst', s.dst or '')
return ans
