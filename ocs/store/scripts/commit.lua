-- commit: debit the units a session used and, when n > 0, hold the next slice in the same step.
-- ARGV: now, msisdn, request key, answer kept until (now + session TTL, Unix ms),
--       session id, used units, cost of the
--       used units in money (rated from the session's money cursor, after the units its held
--       buckets cover), expected session version (-1: unknown), n next units (0: none),
--       cost of n, bucket units quoted (-1: script decides), hold ms, flags, the thresholds'
--       generation (no fingerprint: it is "commit:<used>", see lib.lua).
-- Usage is debited in full even past the credit limit or while barred: it already happened.
-- Status OK; OKQ when the usage was debited but the next slice needs a quote; OKD when the
-- usage was debited and the next slice is denied (barred).
local now, msisdn, rk = ARGV[1] + 0, ARGV[2], ARGV[3]
local sid, used, cost, esv = ARGV[5], ARGV[6] + 0, ARGV[7] + 0, ARGV[8] + 0
local n, cn, bq = ARGV[9] + 0, ARGV[10] + 0, ARGV[11] + 0
local hold_ms, flags = ARGV[12] + 0, ARGV[13]

REQ_FP = 'commit:' .. ARGV[6] -- (see idem_get)
local af = '\255c' .. rk -- (this request's answer: see session_lookup)
local done, a, s, counts = open_session(msisdn, now, sid, esv, af)
if done then
  return done
end
local ub = settle(a, s, used, cost)
local status, granted, qb, qa = 'OK', 0, 0, 0
if n > 0 then
  if denied(a, flags) then
    status = 'OKD'
  else
    qb, qa = hold(a, s, s.svc, now, n, cn, bq)
    if qb then
      status = 'OKQ'
    else
      granted = n
    end
  end
end
s.x = now + hold_ms
index_expiry(a, msisdn, s.x)
local open, adue = open_state(a, counts)
local state = answer_due(a, msisdn, now, open, adue, counts)
save_account(a, now)
local final = string.find(flags, 'F', 1, true) ~= nil
local ans = answer(status, a, s, granted, cost, ub, qb, qa, final)
if state then
  redis.call('HSET', K_SESS, sid, cmsgpack.pack(s), af, answer_value(ans), OPEN_FIELD, state)
else
  redis.call('HSET', K_SESS, sid, cmsgpack.pack(s), af, answer_value(ans))
end
-- (numbers as received where the event carries them unchanged: see lib.lua)
emit('commit', msisdn, a, a.tv, 'sid', sid, 'svc', s.svc, 'rk', rk, 'u', ARGV[6], 'ub', fmt(ub),
  'amt', cost > 0 and '-' .. ARGV[7] or fmt(-cost), 'g', granted == n and ARGV[9] or '0',
  'gb', fmt(s.gb), 'hm', s.hm == 0 and '0' or ARGV[10], 'dst', s.dst or '')
return ans
