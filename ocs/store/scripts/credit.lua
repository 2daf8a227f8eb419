-- credit: top-up, refund or adjustment of the money balance, idempotent by its reference.
-- The answer's `charged` slot carries the amount applied.
-- ARGV: now, msisdn, reference (the request key), idempotency ttl ms, kind (topup | refund |
--       adjust), signed amount, note.
local now, msisdn, rk, ttl = ARGV[1] + 0, ARGV[2], ARGV[3], ARGV[4] + 0
local kind, amount, note = ARGV[5], ARGV[6] + 0, ARGV[7]

-- Whether a session is open (the sessions hash also holds session answers: session_lookup).
-- Only here, and top-ups are rare: the fields are read only when the hash is not empty.
local function has_open_session()
  if redis.call('HLEN', K_SESS) == 0 then
    return false
  end
  for _, f in ipairs(redis.call('HKEYS', K_SESS)) do
    if string.byte(f, 1) ~= ANSWER_MARK then
      return true
    end
  end
  return false
end

local prev = idem_get()
if prev then
  return prev
end
local a = load_account()
if not a then
  return answer('NOSUB')
end
-- Balances stay far inside the range where Lua's doubles are exact integers (2^53).
if math.abs(a.bal + amount) > 1e15 then
  return unchanged('TOOBIG', a)
end
expire_due(a, msisdn, now)
a.bal = a.bal + amount
save_account(a, now)
-- (the amount as received; a kind the readers know the fields of: one compact field)
if kind == 'topup' or kind == 'refund' or kind == 'adjust' then
  emit(kind, msisdn, a, a.tv, 'rk', rk, 'amt', ARGV[6], 'note', note)
else
  emit_named(kind, msisdn, a, a.tv, 'rk', rk, 'amt', ARGV[6], 'note', note)
end
-- Open sessions may now use more: tell whoever serves them (the Diameter agent sends a RAR).
if amount > 0 and has_open_session() then
  redis.call('XADD', K_NTF, 'MAXLEN', '~', '100000', '*', 't', 'credit', 'sub', msisdn,
    'ts', NOW_TEXT, 'bal', a.tb, 'ver', a.tv, 'kind', kind)
end
return idem_put(answer('OK', a, nil, 0, amount), ttl)
