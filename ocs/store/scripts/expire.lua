-- expire: release a subscriber's sessions whose hold time has passed (the sweeper's step;
-- every other script does the same lazily). ARGV: now, msisdn. Returns how many it released.
local now, msisdn = ARGV[1] + 0, ARGV[2]
local a = load_account()
if not a then
  redis.call('ZREM', K_EXP, msisdn)
  return 0
end
local n = expire_due(a, msisdn, now)
if n > 0 then
  save_account(a, now)
end
return n
