-- lib.lua: the prelude shared by every balance script. The store prepends it to each script's
-- body when it loads the scripts, so each script stays one atomic unit with no duplicated logic.
--
-- Conventions (docs/architecture.md, Invariants):
--   KEYS[1] account hash, KEYS[2] sessions hash, KEYS[3] bucket outbox stream,
--   KEYS[4] bucket expiry index (zset), KEYS[5] the bucket's copy of each plan's balance
--   thresholds (hash: plan -> spec), KEYS[6] the bucket's notification stream (barring
--   changes for the provisioning worker, webhooks and the Diameter agent), KEYS[7]
--   idempotency key (debit, credit, upsert: one-shot requests). All carry the subscriber's
--   bucket hash tag, so the script touches one Redis Cluster slot.
--   The answers of session requests (reserve, commit, release) are fields of the sessions hash
--   (see session_lookup), not keys of their own.
--   Money and units are integers. Lua numbers are doubles (exact to 2^53); the Python side
--   refuses anything above 10^15, and every number written back goes through fmt(): Redis
--   would turn a Lua number into text with "%.17g" (exact for these integers, but a slower
--   sprintf than '%d'), and Lua's own tostring uses "%.14g" (1e+15: digits lost).
--   The clock is ARGV (now, Unix ms), never TIME: replicas and AOF replay see the same value.
--   ARGV[1] is `now` in every script, ARGV[4] the idempotency TTL in those that have one
--   (the session scripts: the time until which the answer is kept, now + TTL, Unix ms);
--   the last two are the request's fingerprint (see idem_get) and the thresholds' generation;
--   the session scripts have no fingerprint argument: they make theirs from their own
--   arguments (one argument fewer per request: ~0.4 µs less in the OCS's
--   hiredis.pack_command; in Redis the concatenation costs what parsing the argument did;
--   docs/architecture.md, Performance 18).
--
-- Cost (Redis CPU is the OCS's bottleneck; measured with callgrind, instructions per call):
-- - Converting numbers is a large share of a script's work. string.format is a sprintf
--   (~2k instructions), so numbers are formatted once and text already at hand is reused:
--   `now` and the TTL as received (the Store sends Python ints, i.e. canonical decimal
--   text), account numbers as read when they did not change.
-- - Text becomes a number with `text + 0` (one strtod), not tonumber() (Lua 5.1's checks and
--   then converts: two, ~2x the cost). The text is known numeric: ARGV numbers from the
--   Store, fields the scripts wrote.
-- - Every table costs an allocation plus garbage collection later, and every function here
--   is a closure created again on each call (~1k instructions each with its upvalues): build
--   few of both. A helper used by one script lives in that script.
-- The request's own values. Between the two markers: one `local NAMES = EXPRESSIONS` per line
-- (as a Redis Function, ocs/store/functions.py declares these once per library and assigns
-- them on every call; as an EVALSHA script they are what they say).
-- THR_GEN, the last argument of every script: the generation of the thresholds in K_THR (a
-- digest the Store sends). An account evaluated with another generation re-evaluates at its
-- next change, so a plan's new thresholds reach accounts whose balance sits still.
-- REQ_FP: the request's fingerprint (see idem_get; a session script sets its own first).
-- per call {
local K_ACCT, K_SESS, K_OUT, K_EXP = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_THR, K_NTF, K_IDEM = KEYS[5], KEYS[6], KEYS[7]
local NOW_TEXT, THR_GEN, REQ_FP = ARGV[1], ARGV[#ARGV], ARGV[#ARGV - 1]
-- per call }

local function fmt(n)
  if n == 0 then
    return '0' -- the commonest value, and never '-0'
  end
  return string.format('%d', n)
end

-- Barring levels, for the thresholds' actions and the account states alike.
local LEVEL = {notify = 0, ['bar-outgoing'] = 1, ['bar-all'] = 2, active = 0,
  ['barred-outgoing'] = 1, ['barred-all'] = 2, suspended = 2, outgoing = 1, all = 2}
local LEVEL_NAME = {[0] = 'none', 'outgoing', 'all'}

-- The barring the network should apply: the stronger of the state's and the thresholds'.
local function barring(st, nb)
  local l, m = LEVEL[st or 'active'] or 0, nb and LEVEL[nb] or 0
  return LEVEL_NAME[m > l and m or l]
end

-- The account's state as an answer reports it: the thresholds' barring where it is stronger.
local function state_of(a)
  local nb = a.nb
  if nb and LEVEL[nb] > (LEVEL[a.st or 'active'] or 0) then
    return 'barred-' .. nb
  end
  return a.st
end

-- The fixed-shape answer every charging script returns (see ocs/store/store.py, ScriptAnswer).
-- Numbers stay numbers: Redis turns them into integer replies (exact: they are integers below
-- 2^53), which costs far less than formatting each one as a string here.
-- The request's figures are positional (nil: 0): granted, charged, units from buckets,
-- quote (bucket units, money), final.
local function answer(status, a, s, granted, charged, ub, qb, qa, final)
  local r = {status, granted or 0, charged or 0, ub or 0, 0, 0, 0, 0, 0, 0, qb or 0, qa or 0, 0,
    final and 1 or 0, '', '', '', '', 0, '', '', 0, 0}
  if a then
    r[5], r[6], r[7], r[15], r[20] = a.bal, a.rsv, a.lim, state_of(a), a.plan or ''
  end
  if s then
    r[8], r[9], r[10], r[13] = s.sv, s.um, s.gb, s.u
    r[16], r[17], r[18], r[19], r[21] = s.svc or '', s.dst or '', s.loc or '', s.t0 or 0,
      s.plan or ''
    r[23] = s.hm -- (slot 22: the replay flag, set by idem_get)
  end
  return r
end

-- The request's fingerprint (ARGV[#ARGV - 1]: what the client asked, as the Store sees it,
-- e.g. "topup:5000000"; '' when the request has none; a session script's is its name and
-- what it asked for, "reserve:<service>", "commit:<used>", "release:<used>", made from its
-- arguments). It is stored with the answer, so a
-- replay can tell a retry of the same request (slot 22 of the answer: 1) from a different
-- request sent under a key already used (2). Either way the first answer is returned and
-- nothing changes; the caller decides what a different request under the same key means.

local function idem_get()
  if K_IDEM then
    local v = redis.call('GET', K_IDEM)
    if v then
      local ans, fp = cmsgpack.unpack(v)
      ans[22] = (fp and fp ~= REQ_FP) and 2 or 1
      return ans
    end
  end
  return nil
end

local function idem_put(ans, ttl_ms)
  if K_IDEM and ttl_ms > 0 then
    redis.call('SET', K_IDEM, cmsgpack.pack(ans, REQ_FP), 'PX', ARGV[4])
  end
  return ans
end

-- The answers of session requests (reserve, commit, release) live in the subscriber's sessions
-- hash, beside the sessions: field ANSWER_MARK .. script letter (r, c, e) .. request key, value
-- "<kept until, Unix ms>:" .. cmsgpack(answer, fingerprint). A session id is UTF-8 text, which
-- never holds the byte 0xFF, so the two kinds of field cannot meet. A request reads its session
-- and its possible earlier answer in one HMGET, and writes both in one HSET: no key, no TTL, no
-- GET and SET of their own (docs/architecture.md, Performance 15). Any earlier request of the
-- session replays its answer until the time it was kept until (the request's clock + the
-- session TTL), also after the release or the expiry of the session; expire_due deletes the
-- answers past that time, in batches: a new answer asks for a pass half a TTL after its time,
-- a pass for the next when half of those left are past theirs, so an answer is kept 1 to 1.5
-- TTLs and one pass deletes many (the expiry index, a.nexp, schedules the passes); when no
-- session is left open, the pass comes no later than the last answer's time, so the answers
-- of a subscriber who then makes no requests are kept about a TTL.
local ANSWER_MARK = 255
-- And one field, "<open sessions>:<when the next pass for answers is due>[:<the last
-- answer's time, written by the release of the last open session>]" (absent: not known; see
-- open_state). The index's score stays a lower bound (a release does not raise it: the next
-- reserve would have to lower it again); the pass it brings at a released session's hold
-- reads this field alone and, with no session open and no answer past its time, only moves
-- the score to the answers' pass (see expire_due).
local OPEN_FIELD = '\255#'

-- The session's packed record (or false) and the count of open sessions as the hash holds it
-- (false: not held); or the stored answer of this request (a replay: slot 22 as idem_get's).
local function session_lookup(sid, af)
  local r = redis.call('HMGET', K_SESS, sid, af, OPEN_FIELD)
  local v = r[2]
  if v then
    local ans, fp = cmsgpack.unpack(string.sub(v, string.find(v, ':', 1, true) + 1))
    ans[22] = (fp and fp ~= REQ_FP) and 2 or 1
    return ans, false
  end
  if K_IDEM then
    -- For a session TTL after an upgrade, the Store also names the key under which an
    -- earlier version kept this request's answer (Store.legacy_answers_until); never written.
    local prev = idem_get()
    if prev then
      return prev, false
    end
  end
  return nil, r[1], r[3]
end

-- How many sessions are open (false: not known) and when the next pass for answers is due (0:
-- none), after load_account and expire_due: what a pass found, else what OPEN_FIELD holds,
-- else none of either when the account has nothing in the expiry index.
local function open_state(a, held)
  if a.open then
    return a.open, a.adue
  end
  if held then
    local i = string.find(held, ':', 1, true)
    local j = string.find(held, ':', i + 1, true)
    return string.sub(held, 1, i - 1) + 0, string.sub(held, i + 1, j and j - 1) + 0
  end
  if a.nexp == 0 then
    return 0, 0
  end
  return false, 0
end

-- The text of a session answer to store (ARGV[4]: kept until, already text).
local function answer_value(ans)
  return ARGV[4] .. ':' .. cmsgpack.pack(ans, REQ_FP)
end


-- Re-evaluate the balance thresholds (the account's own, else its plan's) with hysteresis:
-- a threshold engages when the balance falls below `below` and stays engaged until the
-- balance is back at `lift` or more. Spec: "below:lift:action;..." (micro-units). Leaves the
-- new state in `a` for save_account to write (a.thr_dirty) and what was crossed in
-- a.crossing, for emit() to journal after the request's own event. Rare: only when the
-- balance leaves its band, the thresholds changed, or the plan did.
local function crossed(a)
  local r = redis.call('HMGET', K_ACCT, 'thr', 'th')
  local spec, was = r[1], a.th or r[2] or ''
  if not spec and a.plan then
    spec = redis.call('HGET', K_THR, a.plan)
  end
  local on, downs, ups, level, blo, bhi, tlo, thi = {}, {}, {}, 0, nil, nil, '', ''
  for below, lift, action in string.gmatch(spec or '', '(-?%d+):(-?%d+):([%a-]+)') do
    local b, l = below + 0, lift + 0
    local before = string.find(was, ',' .. below .. ',', 1, true) ~= nil
    if a.bal < b or (before and a.bal < l) then
      on[#on + 1] = below
      if LEVEL[action] > level then
        level = LEVEL[action]
      end
      if not bhi or l < bhi then
        bhi, thi = l, lift
      end
      if not before then
        downs[#downs + 1] = below .. ':' .. action
      end
    else
      if not blo or b > blo then
        blo, tlo = b, below
      end
      if before then
        ups[#ups + 1] = below .. ':' .. action
      end
    end
  end
  if a.nb0 == false then
    a.nb0 = a.nb or 'none' -- the barring before this script, for the notification
  end
  a.th = #on > 0 and (',' .. table.concat(on, ',') .. ',') or ''
  a.nb, a.blo, a.bhi, a.tlo, a.thi = level > 0 and LEVEL_NAME[level] or nil, blo, bhi, tlo, thi
  a.thr_dirty = true
  if #downs > 0 or #ups > 0 then
    local c = a.crossing
    local d, u = table.concat(downs, ','), table.concat(ups, ',')
    if c then -- (crossed twice in one script: thresholds changed, then the balance moved)
      d = (c[1] ~= '' and d ~= '') and (c[1] .. ',' .. d) or (c[1] .. d)
      u = (c[2] ~= '' and u ~= '') and (c[2] .. ',' .. u) or (c[2] .. u)
    end
    a.crossing = {d, u}
  end
end

-- The account fields the scripts use, read with one HMGET: cheaper than HGETALL (fewer
-- replies to turn into Lua strings) plus building a table from it. An account always has
-- `st` and `ver` (upsert writes both), so both missing means there is no account.
local function load_account()
  local r = redis.call('HMGET', K_ACCT, 'bal', 'rsv', 'lim', 'st', 'plan', 'ver', 'nexp', 'bk',
    'nb', 'blo', 'bhi', 'thv')
  local tb, tr, tl, st, ver, tn, bk = r[1], r[2], r[3], r[4], r[6], r[7], r[8]
  local nb, blo, bhi = r[9], r[10], r[11]
  if not st and not ver then
    return nil
  end
  -- A missing field reads as false; its value is 0.
  local bal, rsv, nexp = tb and tb + 0, tr and tr + 0, tn and tn + 0
  -- Every field in one constructor, so the table is sized once (each field added later can
  -- make Lua rebuild it). held_*: what the hash holds (false: missing), so save_account
  -- writes only what changed; tb, tr, tn: the text of bal, rsv, nexp, for the values vb, vr,
  -- vn (see account_text); tv: the text of the new version (save_account).
  -- nb: the barring the balance thresholds impose ('outgoing' or 'all'; nil: none); blo, bhi:
  -- the band of balances in which no threshold is crossed (nil: unbounded), so the common
  -- case checks two numbers and reads no threshold (see crossed()).
  local a = {bal = bal or 0, rsv = rsv or 0, lim = tl and tl + 0 or 0, st = st or nil,
    plan = r[5] or nil, ver = ver and ver + 0 or 0, nexp = nexp or 0,
    buckets = (bk and bk ~= '') and cmsgpack.unpack(bk) or {}, dirty_buckets = false,
    touched = false, held_bal = bal, held_rsv = rsv, held_nexp = nexp,
    tb = tb, tr = tr, tn = tn, vb = bal, vr = rsv, vn = nexp, tv = false,
    nb = (nb and nb ~= 'none') and nb or nil, st0 = st or nil, nb0 = false,
    blo = (blo and blo ~= '') and blo + 0 or nil, bhi = (bhi and bhi ~= '') and bhi + 0 or nil,
    evaluate = false, crossing = false, thr_dirty = false, open = false, adue = 0}
  if r[12] ~= THR_GEN then
    crossed(a) -- thresholds changed since this account was last evaluated: before any check
  end
  return a
end

-- Bring the text of bal, rsv and nexp (a.tb, a.tr, a.tn) up to date: formatted once per new
-- value, and shared by the account hash, the expiry index and the events.
local function account_text(a)
  if a.bal ~= a.vb then
    a.vb, a.tb = a.bal, fmt(a.bal)
  end
  if a.rsv ~= a.vr then
    a.vr, a.tr = a.rsv, fmt(a.rsv)
  end
  if a.nexp ~= a.vn then
    a.vn, a.tn = a.nexp, fmt(a.nexp)
  end
end

-- The thresholds' evaluation (crossed()) as account fields, after those already in args.
local function threshold_args(a, args)
  local n = #args
  args[n + 1], args[n + 2], args[n + 3], args[n + 4] = 'th', a.th, 'nb', a.nb or 'none'
  args[n + 5], args[n + 6], args[n + 7], args[n + 8] = 'blo', a.tlo, 'bhi', a.thi
  args[n + 9], args[n + 10] = 'thv', THR_GEN
end

-- Write back what scripts change (fields whose value is unchanged are left as they are).
-- Buckets that are used up, or expired and not held, go. a.tv is the new version's text.
local function save_account(a, now)
  a.ver = a.ver + 1
  a.tv = fmt(a.ver)
  account_text(a)
  local args = {'ver', a.tv, 'up', NOW_TEXT}
  if a.evaluate or (a.bal ~= a.held_bal and ((a.blo and a.bal < a.blo)
      or (a.bhi and a.bal >= a.bhi))) then
    crossed(a)
  end
  if a.thr_dirty then
    threshold_args(a, args)
  end
  if a.bal ~= a.held_bal then
    args[#args + 1] = 'bal'
    args[#args + 1] = a.tb
  end
  if a.rsv ~= a.held_rsv then
    args[#args + 1] = 'rsv'
    args[#args + 1] = a.tr
  end
  if a.nexp ~= a.held_nexp then
    args[#args + 1] = 'nexp'
    args[#args + 1] = a.tn
  end
  if a.dirty_buckets then
    local keep = {}
    for _, b in ipairs(a.buckets) do
      local expired = b.x > 0 and b.x <= now
      b.free = nil
      if b.r > 0 or (b.n > 0 and not expired) then
        keep[#keep + 1] = b
      end
    end
    a.buckets = keep
    args[#args + 1] = 'bk'
    args[#args + 1] = cmsgpack.pack(keep)
  end
  redis.call('HSET', K_ACCT, unpack(args))
end

-- One event in the bucket's outbox: the journal that CDRs, audit and consumers read.
-- `ver` is the text of the account version after the script: events written before
-- save_account() (lazy expiries) pass fmt(a.ver + 1), the rest a.tv. The per-kind fields
-- follow as name, text pairs (numbers already formatted: no table to build and walk).
-- A threshold crossed, or a change of the barring the network should apply, is journalled
-- after the request's event, and a barring change is also put on the notification stream.
local function journal_crossing(msisdn, a, ver)
  local c = a.crossing
  if c then
    redis.call('XADD', K_OUT, '*', 't', 'threshold', 'sub', msisdn, 'ts', NOW_TEXT, 'bal', a.tb,
      'rsv', a.tr, 'ver', ver, 'down', c[1], 'up', c[2], 'nb', a.nb or 'none')
  end
  if c or a.nb0 or a.st ~= a.st0 then
    local was, now_bar = barring(a.st0, a.nb0 or a.nb), barring(a.st, a.nb)
    if c or was ~= now_bar then
      redis.call('XADD', K_NTF, 'MAXLEN', '~', '100000', '*', 't', 'barring', 'sub', msisdn,
        'ts', NOW_TEXT, 'bal', a.tb, 'ver', ver, 'bar', now_bar, 'was', was,
        'down', c and c[1] or '', 'up', c and c[2] or '', 'st', a.st or '', 'plan', a.plan or '')
    end
  end
  a.crossing, a.nb0 = false, false
end

-- The event of a kind whose fields vary (upsert's changes): every field by name.
local function emit_named(kind, msisdn, a, ver, ...)
  account_text(a)
  redis.call('XADD', K_OUT, '*', 't', kind, 'sub', msisdn, 'ts', NOW_TEXT, 'bal', a.tb,
    'rsv', a.tr, 'ver', ver, ...)
  journal_crossing(msisdn, a, ver)
end

-- The event of a kind with a fixed list of fields (reserve, commit, release, expire, debit,
-- the credits): one stream field, EVENT_FIELD, whose value is the fields' values in the
-- order given, after t, sub, ts, bal, rsv and ver, joined by EVENT_SEP (issue 17). One field
-- instead of 12-16: fewer arguments for XADD to take, no field names in the stream's
-- listpack (every entry has the fields of the node's first: Redis keeps them once) nor in
-- the AOF. The names are given too, in the same order as ocs/store/events.py's LAYOUTS
-- (the readers turn the value back into the named fields): a value holding EVENT_SEP itself
-- (text from a request: a session id, a request key, a destination, a note) makes the event
-- the named kind instead, which every reader takes as well.
local EVENT_FIELD, EVENT_SEP = 'e', '\31'

-- A request key that starts with the session id (the agents' "<session>/<n>") is written as
-- the rest of it, and the kind as kind .. '~' says so (the readers put the session id back).
local function emit(kind, msisdn, a, ver, ...)
  if string.find(msisdn, EVENT_SEP, 1, true) then
    return emit_named(kind, msisdn, a, ver, ...)
  end
  account_text(a)
  local v, sid, rel = {...}, nil, ''
  local n = #v
  for i = 2, n, 2 do
    local x = v[i]
    if string.find(x, EVENT_SEP, 1, true) then
      return emit_named(kind, msisdn, a, ver, ...)
    end
    local f = v[i - 1]
    if f == 'sid' then
      sid = x
    elseif f == 'rk' and sid and string.sub(x, 1, #sid) == sid then
      x, rel = string.sub(x, #sid + 1), '~'
    end
    v[i / 2] = x
  end
  redis.call('XADD', K_OUT, '*', EVENT_FIELD, kind .. rel .. EVENT_SEP .. msisdn .. EVENT_SEP
    .. NOW_TEXT .. EVENT_SEP .. a.tb .. EVENT_SEP .. a.tr .. EVENT_SEP .. ver .. EVENT_SEP
    .. table.concat(v, EVENT_SEP, 1, n / 2))
  journal_crossing(msisdn, a, ver)
end

-- Keep the expiry index's score at (a lower bound of) the earliest session expiry.
local function index_expiry(a, msisdn, x)
  if a.nexp == 0 or x < a.nexp then
    a.nexp = x
    account_text(a)
    redis.call('ZADD', K_EXP, a.tn, msisdn)
  end
end

-- Schedule the deletion of this request's answer (see session_lookup) in the expiry index,
-- half a TTL past its time (ARGV[4]); before save_account, which writes a.nexp. `open`,
-- `adue`: open_state's, after this request (`open` false: not known: the index's score stays
-- a lower bound). Returns OPEN_FIELD's new text (nil: not known, or unchanged).
local function answer_due(a, msisdn, now, open, adue, held)
  local keep = ARGV[4] + 0
  local due = keep + math.floor((keep - now) / 2)
  if not open then
    index_expiry(a, msisdn, due)
    return nil
  end
  if adue == 0 or due < adue then
    adue = due
  end
  index_expiry(a, msisdn, adue)
  -- (a count below 10 without a sprintf; when none is left open, the time after which every
  -- answer is past its own: this one's and a sixteenth of a TTL, for the requests' clocks,
  -- which may differ a little between processes)
  local text = (open < 10 and string.char(48 + open) or fmt(open)) .. ':' .. fmt(adue)
  if open == 0 then
    text = text .. ':' .. fmt(keep + math.floor((keep - now) / 16))
  end
  if text ~= held then
    return text
  end
  return nil
end

-- Return a session's held money and bucket units to the account.
local function release_hold(a, s)
  a.rsv = a.rsv - s.hm
  s.hm = 0
  if s.gb > 0 then
    for _, b in ipairs(a.buckets) do
      local held = s.hb[b.id]
      if held then
        b.r = b.r - held
      end
    end
    a.dirty_buckets = true
    s.hb = {}
  end
  -- (s.hb is empty when s.gb is 0: hold() fills it only with bucket units it holds)
  s.gb, s.g = 0, 0
end

-- Release every session whose hold time has passed (lazily here, and from the sweeper).
local function expire_due(a, msisdn, now)
  if a.nexp == 0 or now < a.nexp then
    return 0
  end
  local held = redis.call('HGET', K_SESS, OPEN_FIELD)
  if held then
    local open, adue = open_state(a, held)
    local j = string.find(held, ':', #tostring(open) + 2, true)
    local last = j and string.sub(held, j + 1) + 0
    if open == 0 and (last and last <= now or math.min(adue, last or adue) > now) then
      if last and last <= now then
        -- No session open and every answer past its time: the key goes, in one DEL.
        redis.call('DEL', K_SESS)
        a.open, a.adue, a.nexp = 0, 0, 0
        redis.call('ZREM', K_EXP, msisdn)
      else
        -- No session open, no answer past its time (the pass a released session's hold
        -- brought): only the index moves, to the answers' pass.
        a.open, a.adue, a.nexp = 0, adue, math.min(adue, last or adue)
      end
      a.held_nexp = a.nexp
      account_text(a)
      redis.call('HSET', K_ACCT, 'nexp', a.tn)
      if a.nexp > 0 then
        redis.call('ZADD', K_EXP, a.tn, msisdn)
      end
      return 0
    end
  end
  local raw = redis.call('HGETALL', K_SESS)
  local n, nexp, ver = 0, 0, fmt(a.ver + 1)
  local gone, kmin, kmax = nil, 0, 0 -- session answers: past their time; the others' range
  local open, held = 0, false -- sessions left open; the count the hash held
  for i = 1, #raw, 2 do
    local f, v = raw[i], raw[i + 1]
    if f == OPEN_FIELD then
      held = v
    elseif string.byte(f, 1) == ANSWER_MARK then
      local keep = string.sub(v, 1, string.find(v, ':', 1, true) - 1) + 0
      if keep <= now then
        gone = gone or {}
        gone[#gone + 1] = f
      else
        if kmin == 0 or keep < kmin then
          kmin = keep
        end
        if keep > kmax then
          kmax = keep
        end
      end
    else
      local s = cmsgpack.unpack(v)
      if s.x <= now then
        local held = s.hm
        release_hold(a, s)
        gone = gone or {} -- (deleted with the answers past their time, in one HDEL)
        gone[#gone + 1] = f
        n = n + 1
        emit('expire', msisdn, a, ver, 'sid', f, 'svc', s.svc, 'rel', fmt(held),
          'u', fmt(s.u), 'mc', fmt(s.mc))
      else
        open = open + 1
        if nexp == 0 or s.x < nexp then
          nexp = s.x
        end
      end
    end
  end
  local adue = 0
  if kmin > 0 then
    -- The next batch: when about half of the answers left are past their time.
    adue = kmin + math.floor((kmax - kmin) / 2)
    if nexp == 0 or adue < nexp then
      nexp = adue
    end
  end
  a.open, a.adue = open, adue
  if open == 0 and kmin == 0 then
    if held then
      gone = gone or {}
      gone[#gone + 1] = OPEN_FIELD -- (nothing else is left: the key goes)
    end
  else
    local text = fmt(open) .. ':' .. fmt(adue)
    if held ~= text then
      redis.call('HSET', K_SESS, OPEN_FIELD, text)
    end
  end
  if gone then
    for i = 1, #gone, 1000 do -- (unpack has a limit on its values)
      redis.call('HDEL', K_SESS, unpack(gone, i, math.min(i + 999, #gone)))
    end
  end
  a.nexp = nexp
  a.touched = n > 0
  account_text(a)
  if n == 0 then
    -- Nothing expired (the index only held a lower bound): record the true next expiry.
    redis.call('HSET', K_ACCT, 'nexp', a.tn)
    a.held_nexp = nexp
  end
  if nexp == 0 then
    redis.call('ZREM', K_EXP, msisdn)
  else
    redis.call('ZADD', K_EXP, a.tn, msisdn)
  end
  return n
end

-- Barring and suspension. flags: 'o' outgoing service, 'f' free service.
-- The account's state and the thresholds' barring (a.nb) both count.
local function denied(a, flags)
  local st, nb = a.st, a.nb
  if st == 'active' and not nb then
    return false
  end
  if st == 'suspended' then
    return true
  end
  if st == 'barred-all' or nb == 'all' then
    return string.find(flags, 'f', 1, true) == nil
  end
  if st == 'barred-outgoing' or nb == 'outgoing' then
    return string.find(flags, 'o', 1, true) ~= nil
  end
  return false
end

-- Buckets usable for a service now, in consumption order (priority, then earliest expiry),
-- and the units they have free. `own` is the holding session's current bucket hold, which
-- counts as free for it.
local function usable_buckets(a, svc, now, own)
  local list, units = {}, 0
  if a.buckets[1] == nil then
    return list, 0 -- most accounts have no buckets
  end
  for _, b in ipairs(a.buckets) do
    b.free = b.n - b.r + (own and own[b.id] or 0)
    if b.svc == svc and (b.x == 0 or b.x > now) and b.free > 0 then
      list[#list + 1] = b
      units = units + b.free
    end
  end
  if list[2] == nil then
    return list, units -- nothing to order
  end
  table.sort(list, function(p, q)
    if p.p ~= q.p then
      return p.p < q.p
    end
    local px, qx = p.x == 0 and math.huge or p.x, q.x == 0 and math.huge or q.x
    if px ~= qx then
      return px < qx
    end
    return p.id < q.id
  end)
  return list, units
end

-- Hold a grant of n units for session s: bq from buckets (-1: the script decides, which it can
-- only do when buckets cover all or none of it), the rest as money costing cn.
-- What the session already holds counts as available (a new slice replaces the old one);
-- nothing changes unless the whole grant fits.
-- Returns nothing when held, or the quote the engine needs: bucket units, money available.
local function hold(a, s, svc, now, n, cn, bq)
  local list, bav = usable_buckets(a, svc, now, s.hb)
  local avail = a.bal - a.rsv + a.lim + s.hm -- money available, with what s holds
  local b = bq
  if bq < 0 then
    b = math.min(n, bav)
    if b > 0 and b < n then
      return b, avail
    end
  end
  if b > bav or (b < n and cn > 0 and cn > avail) then -- (free: no credit needed)
    return math.min(n, bav), avail
  end
  if b == n then
    cn = 0
  end
  release_hold(a, s)
  local left = b
  for _, bk in ipairs(list) do
    if left == 0 then
      break
    end
    local take = math.min(left, bk.n - bk.r)
    bk.r = bk.r + take
    s.hb[bk.id] = take
    left = left - take
  end
  if b > 0 then
    a.dirty_buckets = true
  end
  s.gb, s.g, s.hm = b, n, cn
  a.rsv = a.rsv + cn
end

-- Debit `used` units of session s: held bucket units first, then money costing `cost`
-- (the engine rated it from the session's money cursor). Overuse is charged in full.
local function settle(a, s, used, cost)
  local ub = math.min(used, s.gb)
  if ub > 0 then
    local left = ub
    for _, b in ipairs(a.buckets) do
      local held = s.hb[b.id]
      if held and left > 0 then
        local take = math.min(left, held)
        b.n = b.n - take
        left = left - take
      end
    end
    a.dirty_buckets = true
  end
  release_hold(a, s)
  a.bal = a.bal - cost
  s.u = s.u + used
  s.um = s.um + (used - ub)
  s.mc = s.mc + cost
  s.sv = s.sv + 1
  return ub
end

-- A refusal or a quote changes nothing the request asked for; lazy expiries it did on the way
-- are kept (their sessions and events are already written).
-- Write what a script changed without a request of its own (lazy expiries, thresholds
-- applied on the way: the request was refused, or the sweeper's pass). A new version has
-- its event: the expiries' own (written before), or the thresholds' (a crossing, or new
-- thresholds that change the barring with none crossed: an event with empty lists).
-- Thresholds evaluated again with neither only refresh the evaluation's fields, which no
-- event describes, so the version stays: every version has its event in the outbox.
local function save_side_effects(a, msisdn, now)
  if a.thr_dirty and not a.crossing and a.nb0 and a.nb0 ~= (a.nb or 'none') then
    a.crossing = {'', ''}
  end
  if a.touched or a.crossing then
    save_account(a, now)
    journal_crossing(msisdn, a, a.tv)
  elseif a.thr_dirty then
    local args = {}
    threshold_args(a, args)
    redis.call('HSET', K_ACCT, unpack(args))
    journal_crossing(msisdn, a, fmt(a.ver)) -- (a barring notification, if it changed)
  end
end

local function unchanged(status, a, s, granted, charged, ub, qb, qa)
  if a then
    save_side_effects(a, ARGV[2], ARGV[1] + 0)
  end
  return answer(status, a, s, granted, charged, ub, qb, qa)
end

-- The start commit and release share: a replayed request gets its first answer; then the
-- account (NOSUB), lazy expiry, and the session at the version the engine expects (NOSESS,
-- STALE). Returns an answer to return at once, or nil and the account and session.
local function open_session(msisdn, now, sid, esv, af)
  local prev, raw, held = session_lookup(sid, af)
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
  if not raw then
    return unchanged('NOSESS', a)
  end
  local s = cmsgpack.unpack(raw)
  if esv ~= s.sv then
    return unchanged('STALE', a, s)
  end
  return nil, a, s, held
end
