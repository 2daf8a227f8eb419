-- expire: bring an account up to date without a request of its own: release its sessions
-- whose hold time has passed (the sweeper's step; every other script does the same lazily)
-- and apply thresholds published since it was last evaluated (load_account; a read of the
-- account, and the background pass after a plan change). ARGV: now, msisdn. Returns how many
-- sessions it released.
local now, msisdn = ARGV[1] + 0, ARGV[2]
local a = load_account()
if not a then
  redis.call('ZREM', K_EXP, msisdn)
  return 0
end
local n = expire_due(a, msisdn, now)
save_side_effects(a, msisdn, now)
return n
