// The OCS operations dashboard and agency portal (docs/dashboard.md). Reads only the HTTP
// API, with the bearer token of the signed-in user; live figures come from the server-sent
// events of /v1/dashboard/live (read with fetch, so the token travels in a header).
import { createApp, reactive, computed, watch, onMounted, onBeforeUnmount, ref, nextTick } from "vue";
import * as echarts from "echarts";

const LEVELS = ["national", "region", "agency", "account"];
const SERVICES = ["", "data", "voice", "sms"];

// -- session -------------------------------------------------------------------------------
const session = reactive({
  access: sessionStorage.getItem("ocs.access") || "",
  refresh: sessionStorage.getItem("ocs.refresh") || "",
  user: sessionStorage.getItem("ocs.user") || "",
});

function keep(pair, user) {
  session.access = pair.access_token;
  session.refresh = pair.refresh_token;
  if (user !== undefined) session.user = user;
  sessionStorage.setItem("ocs.access", session.access);
  sessionStorage.setItem("ocs.refresh", session.refresh);
  sessionStorage.setItem("ocs.user", session.user);
}

function logout() {
  session.access = session.refresh = session.user = "";
  sessionStorage.clear();
  stopLive();
  go("/ui/login", { next: location.pathname === "/ui/login" ? "" : location.pathname + location.search });
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

let refreshing = null;
async function refreshToken() {
  if (!session.refresh) return false;
  refreshing = refreshing || fetch("/v1/auth/refresh", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }),
  }).then(async (r) => { if (!r.ok) return false; keep(await r.json()); return true; })
    .finally(() => { refreshing = null; });
  return refreshing;
}

async function api(path, { raw = false } = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const r = await fetch(path, { headers: { Authorization: `Bearer ${session.access}` } });
    if (r.status === 401) {
      if (attempt === 0 && (await refreshToken())) continue;
      logout();
      throw new ApiError(401, "signed out");
    }
    if (!r.ok) {
      let detail = `${r.status} ${r.statusText}`;
      try { const p = await r.json(); detail = p.detail || p.title || detail; } catch (e) { /* not JSON */ }
      throw new ApiError(r.status, detail);
    }
    return raw ? r : r.json();
  }
}

// -- formatting ----------------------------------------------------------------------------
const moneyFormats = {};
function money(text, currency = "EUR") {
  if (text === null || text === undefined) return "–";
  const f = moneyFormats[currency] ||= new Intl.NumberFormat("en-GB", { style: "currency", currency });
  return f.format(String(text)); // a decimal string: formatted exactly, no float
}
const intFormat = new Intl.NumberFormat("en-GB");
function num(n) { return n === null || n === undefined ? "–" : intFormat.format(n); }
function isNeg(text) { return typeof text === "string" ? text.startsWith("-") : text < 0; }
function when(ms) { return ms ? new Date(Number(ms)).toISOString().replace("T", " ").slice(0, 19) : ""; }

// -- routing (history API; the server answers index.html for every /ui/ path) ---------------
const route = reactive({ path: location.pathname, query: Object.fromEntries(new URLSearchParams(location.search)) });
function go(path, query = {}) {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
  const url = path + (q.toString() ? `?${q}` : "");
  history.pushState(null, "", url);
  route.path = path; route.query = Object.fromEntries(q);
}
window.addEventListener("popstate", () => {
  route.path = location.pathname;
  route.query = Object.fromEntries(new URLSearchParams(location.search));
});

// -- live feed: one stream per tab -----------------------------------------------------------
const live = reactive({ on: false, last: null, requests: null, refusals: null, seq: 0 });
let liveAbort = null;
const liveListeners = new Set();
async function startLive() {
  if (liveAbort || !session.access) return;
  liveAbort = new AbortController();
  const signal = liveAbort.signal;
  try {
    const r = await fetch("/v1/dashboard/live", { headers: { Authorization: `Bearer ${session.access}` }, signal });
    if (!r.ok) throw new Error(`live feed: ${r.status}`);
    live.on = true;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        const msg = JSON.parse(data);
        live.last = msg; live.seq++;
        if (msg.requests !== null) {
          live.requests = msg.requests * 1000 / msg.tick_ms;
          live.refusals = msg.refusals * 1000 / msg.tick_ms;
        }
        for (const fn of liveListeners) fn(msg);
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") console.info("live feed closed:", e.message);
  } finally {
    live.on = false;
    const aborted = signal.aborted;
    liveAbort = null;
    if (!aborted && session.access) setTimeout(startLive, 2000);
  }
}
function stopLive() { if (liveAbort) liveAbort.abort(); }

// -- components -------------------------------------------------------------------------------
const Chart = {
  props: ["option"],
  template: `<div class="chart" ref="el"></div>`,
  setup(props) {
    const el = ref(null);
    let chart = null;
    const resize = () => chart && chart.resize();
    onMounted(() => {
      chart = echarts.init(el.value);
      chart.setOption(props.option);
      window.addEventListener("resize", resize);
    });
    watch(() => props.option, (o) => chart && chart.setOption(o, true), { deep: true });
    onBeforeUnmount(() => { window.removeEventListener("resize", resize); chart && chart.dispose(); });
    return { el };
  },
};

const Login = {
  template: `
  <form class="login" @submit.prevent="submit" data-testid="login">
    <h1>OCS dashboard</h1>
    <label>User <input v-model="username" name="username" autocomplete="username" required></label>
    <label>Password <input v-model="password" name="password" type="password" autocomplete="current-password" required></label>
    <button type="submit" :disabled="busy">{{ busy ? "Signing in…" : "Sign in" }}</button>
    <p v-if="error" class="state error" role="alert">{{ error }}</p>
  </form>`,
  setup() {
    const username = ref(""), password = ref(""), error = ref(""), busy = ref(false);
    async function submit() {
      busy.value = true; error.value = "";
      try {
        const r = await fetch("/v1/auth/token", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ username: username.value, password: password.value }),
        });
        if (!r.ok) {
          error.value = r.status === 401 ? "Wrong user or password." : `Sign-in failed (${r.status}).`;
          return;
        }
        keep(await r.json(), username.value);
        startLive();
        go(route.query.next && route.query.next.startsWith("/ui/") ? route.query.next : "/ui/");
      } catch (e) {
        error.value = `Sign-in failed: ${e.message}`;
      } finally { busy.value = false; }
    }
    return { username, password, error, busy, submit };
  },
};

const Home = {
  template: `<p v-if="error" class="state error" role="alert">{{ error }}</p><p v-else class="state loading">Loading…</p>`,
  setup() {
    const error = ref("");
    onMounted(async () => {
      try {
        const h = await api("/v1/dashboard");
        if (!h.start.length) { error.value = "No units to show yet: the billing hierarchy is empty."; return; }
        const u = h.start[0];
        history.replaceState(null, "", `/ui/${u.level}/${encodeURIComponent(u.code)}`);
        route.path = `/ui/${u.level}/${encodeURIComponent(u.code)}`;
      } catch (e) { if (e.status !== 401) error.value = e.message; }
    });
    return { error };
  },
};

const Crumbs = {
  props: ["items", "query"],
  template: `<nav class="crumbs" aria-label="breadcrumb" data-testid="breadcrumb">
    <template v-for="(c, i) in items" :key="c.level + c.code">
      <span v-if="i" class="sep">›</span>
      <a v-if="i < items.length - 1" :href="href(c)" @click.prevent="open(c)">{{ c.name }}</a>
      <strong v-else>{{ c.name }}</strong>
    </template></nav>`,
  setup(props) {
    const href = (c) => `/ui/${c.level}/${encodeURIComponent(c.code)}`;
    return { href, open: (c) => go(href(c), props.query) };
  },
};

const Filters = {
  props: ["period", "service"],
  template: `<div class="filters">
    <label>Period <input type="month" :value="period" @change="set('period', $event.target.value)" data-testid="period"></label>
    <label>Service <select :value="service || ''" @change="set('service', $event.target.value)" data-testid="service">
      <option v-for="s in services" :value="s">{{ s || "all services" }}</option></select></label>
    <span class="live" :class="{ on: live.on }" data-testid="live"><span class="dot"></span>{{ live.on ? "live" : "not live" }}</span>
  </div>`,
  setup() {
    const set = (k, v) => go(route.path, { ...route.query, [k]: v });
    return { set, services: SERVICES, live };
  },
};

const KPIS = [
  ["billed", "Billed (issued)"], ["drafted", "Drafted"], ["pending", "Pending usage"],
  ["period_usage", "Usage this period"], ["lad", "LAD credits"], ["penalties", "Penalty credits"],
  ["held", "Held credit"],
];

function useScope(level, code) {
  const state = reactive({ data: null, error: "", loading: true });
  let timer = null, seq = 0;
  async function load() {
    const mine = ++seq;
    state.error = "";
    const q = new URLSearchParams(Object.entries({ period: route.query.period, service: route.query.service }).filter(([, v]) => v));
    try {
      const d = await api(`/v1/dashboard/${level()}/${encodeURIComponent(code())}?${q}`);
      if (mine === seq) state.data = d;
    } catch (e) { if (mine === seq && e.status !== 401) state.error = e.message; }
    finally { if (mine === seq) state.loading = false; }
  }
  function onLive(msg) {
    const d = state.data;
    if (!d) return;
    const u = msg.units[`${d.level}:${d.code}`];
    if (u) {
      d.kpis.held = money_of(u.held); d.kpis.micro.held = u.held;
      d.kpis.open_sessions = u.sessions; d.kpis.barred_lines = u.barred; d.kpis.active_lines = u.lines;
      clearTimeout(timer); timer = setTimeout(load, 250); // pending sums follow the usage
    }
    for (const c of d.children) {
      const cu = msg.units[`${c.level}:${c.code}`];
      if (cu) { c.held = cu.held; c.sessions = cu.sessions; c.barred = cu.barred; }
    }
  }
  onMounted(() => { liveListeners.add(onLive); load(); });
  onBeforeUnmount(() => { liveListeners.delete(onLive); clearTimeout(timer); });
  watch(() => [route.path, route.query.period, route.query.service], () => { state.loading = true; load(); });
  return state;
}

// Micro-units (an integer) to the decimal string the API uses, without a float.
function money_of(micro) {
  const neg = micro < 0, s = String(Math.abs(micro)).padStart(7, "0");
  const units = s.slice(0, -6), frac = s.slice(-6, -4);
  return `${neg ? "-" : ""}${units}.${frac}`;
}

const Kpis = {
  props: ["d", "withRates"],
  template: `<div class="kpis" data-testid="kpis">
    <div class="kpi" v-for="[k, label] in kpis" :key="k" :data-kpi="k" :data-micro="d.kpis.micro[k]">
      <div class="label">{{ label }}</div><div class="value" :class="{ neg: isNeg(d.kpis[k]) }">{{ money(d.kpis[k], d.currency) }}</div></div>
    <div class="kpi" v-for="(v, s) in d.kpis.usage_by_service.micro" :key="'svc' + s" :data-kpi="'usage_' + s" :data-micro="v">
      <div class="label">Usage: {{ s }}</div><div class="value">{{ money(d.kpis.usage_by_service[s], d.currency) }}</div></div>
    <div class="kpi" data-kpi="active_lines"><div class="label">Active lines</div><div class="value">{{ num(d.kpis.active_lines) }}</div></div>
    <div class="kpi" data-kpi="open_sessions"><div class="label">Open sessions</div><div class="value">{{ num(d.kpis.open_sessions) }}</div></div>
    <div class="kpi" data-kpi="barred_lines"><div class="label">Barred lines</div><div class="value" :class="{ neg: d.kpis.barred_lines > 0 }">{{ num(d.kpis.barred_lines) }}</div></div>
    <template v-if="d.kpis.requests_per_s !== null">
      <div class="kpi" data-kpi="requests_per_s"><div class="label">Charging requests/s (OCS)</div><div class="value">{{ rate(live.requests ?? d.kpis.requests_per_s) }}</div></div>
      <div class="kpi" data-kpi="refusals_per_s"><div class="label">Refusals/s (OCS)</div><div class="value">{{ rate(live.refusals ?? d.kpis.refusals_per_s) }}</div></div>
    </template>
  </div>`,
  setup() {
    return { kpis: KPIS, money, num, isNeg, live, rate: (v) => new Intl.NumberFormat("en-GB", { maximumFractionDigits: 1 }).format(v) };
  },
};

function dayChart(d) {
  return {
    grid: { left: 70, right: 16, top: 24, bottom: 40 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: d.by_day.map((x) => x.day.slice(5)) },
    yAxis: { type: "value", name: d.currency },
    series: [{ type: "bar", name: "usage", data: d.by_day.map((x) => x.micro / 1e6), itemStyle: { color: "#1f5fbf" } }],
  };
}

const COLUMNS = [
  ["name", "Name", false], ["billed", "Billed", true], ["drafted", "Drafted", true],
  ["pending", "Pending usage", true], ["period_usage", "Usage", true], ["lad", "LAD", true],
  ["penalties", "Penalties", true], ["held", "Held", true], ["accounts", "Accounts", false],
  ["lines", "Lines", false], ["sessions", "Sessions", false], ["barred", "Barred", false],
];

const Scope = {
  components: { Crumbs, Filters, Kpis, Chart },
  props: ["level", "code"],
  template: `<div>
    <Crumbs v-if="s.data" :items="s.data.breadcrumb" :query="route.query" />
    <Filters :period="s.data ? s.data.period : route.query.period" :service="route.query.service" />
    <p v-if="s.error" class="state error" role="alert" data-testid="error">{{ s.error }}</p>
    <p v-else-if="s.loading && !s.data" class="state loading">Loading…</p>
    <template v-if="s.data && !s.error">
      <h1 data-testid="title">{{ s.data.name }} <span class="tag">{{ s.data.level }}</span></h1>
      <Kpis :d="s.data" />
      <div class="grid2">
        <section class="card"><h2>Usage by day</h2><Chart :option="days" /></section>
        <section class="card" v-if="s.data.children.length"><h2>{{ childLabel }} by billed + pending</h2><Chart :option="tree" /></section>
      </div>
      <section class="card" v-if="s.data.level !== 'account'">
        <h2>{{ childLabel }}</h2>
        <p v-if="!s.data.children.length" class="state" data-testid="empty">Nothing below this {{ s.data.level }} yet.</p>
        <table v-else data-testid="children">
          <thead><tr><th v-for="[k, label, m] in columns" :key="k" :data-sort="k" :class="{ num: k !== 'name' }" @click="sortBy(k)">{{ label }}{{ sort.key === k ? (sort.desc ? " ▼" : " ▲") : "" }}</th></tr></thead>
          <tbody><tr v-for="c in rows" :key="c.code" class="link" :data-code="c.code" @click="open(c)">
            <td>{{ c.name }}</td>
            <td v-for="[k, label, m] in columns.slice(1)" :key="k" class="num" :data-col="k" :data-micro="m ? c.micro[k] : c[k]" :class="{ neg: m && c.micro[k] < 0 }">{{ m ? money(c[k], s.data.currency) : num(c[k]) }}</td>
          </tr></tbody>
        </table>
      </section>
    </template>
  </div>`,
  setup(props) {
    const s = useScope(() => props.level, () => props.code);
    const sort = reactive({ key: "name", desc: false });
    const rows = computed(() => {
      if (!s.data) return [];
      const k = sort.key, money = COLUMNS.find((c) => c[0] === k)[2];
      const v = (c) => (k === "held" ? c.held : money ? c.micro[k] : c[k]);
      return [...s.data.children].sort((a, b) => (v(a) < v(b) ? -1 : v(a) > v(b) ? 1 : 0) * (sort.desc ? -1 : 1));
    });
    const days = computed(() => (s.data ? dayChart(s.data) : {}));
    const tree = computed(() => (s.data ? {
      tooltip: {},
      series: [{ type: "treemap", roam: false, nodeClick: false, breadcrumb: { show: false },
        data: s.data.children.map((c) => ({ name: c.name, code: c.code, level: c.level,
          value: Math.max(1, (c.micro.billed + c.micro.drafted + c.micro.pending) / 1e6) })) }],
    } : {}));
    const childLabel = computed(() => ({ national: "Regions", region: "Agencies", agency: "Accounts" })[s.data?.level] || "");
    function open(c) { go(`/ui/${c.level}/${encodeURIComponent(c.code)}`, { period: route.query.period, service: route.query.service }); }
    function sortBy(k) { if (sort.key === k) sort.desc = !sort.desc; else { sort.key = k; sort.desc = k !== "name"; } }
    return { s, route, rows, sort, sortBy, columns: COLUMNS, money, num, days, tree, childLabel, open };
  },
};

const Account = {
  components: { Scope },
  props: ["code"],
  template: `<div>
    <Scope level="account" :code="code" />
    <div class="grid2">
      <section class="card" data-testid="pending"><h2>Pending (accrued, not yet invoiced)</h2>
        <p v-if="pending.error" class="state error">{{ pending.error }}</p>
        <p v-else-if="!pending.data" class="state loading">Loading…</p>
        <table v-else><tbody>
          <tr v-for="k in ['usage', 'fixed', 'lad', 'penalty', 'total']" :key="k" :data-pending="k" :data-micro="pending.data.micro[k]">
            <td>{{ k }}</td><td class="num" :class="{ neg: isNeg(pending.data[k]) }">{{ money(pending.data[k], pending.data.currency) }}</td></tr>
        </tbody></table>
      </section>
      <section class="card" data-testid="services"><h2>Services</h2>
        <p v-if="acct.error" class="state error">{{ acct.error }}</p>
        <p v-else-if="!acct.data" class="state loading">Loading…</p>
        <p v-else-if="!acct.data.services.length" class="state">No fixed services.</p>
        <table v-else><thead><tr><th>Service</th><th>Description</th><th class="num">Monthly</th><th>SLA</th><th>From</th></tr></thead><tbody>
          <tr v-for="x in acct.data.services" :key="x.service_id"><td>{{ x.service_id }}</td><td>{{ x.description }}</td>
            <td class="num">{{ money(x.monthly_charge, acct.data.currency) }}</td><td>{{ x.sla_tier }}</td><td>{{ x.start_date }}</td></tr>
        </tbody></table>
      </section>
    </div>
    <section class="card" data-testid="lines"><h2>Lines</h2>
      <p v-if="lines.error" class="state error">{{ lines.error }}</p>
      <p v-else-if="!lines.data" class="state loading">Loading…</p>
      <p v-else-if="!lines.data.items.length" class="state">No lines.</p>
      <table v-else><thead><tr><th>MSISDN</th><th>Plan</th><th>State</th><th>Barring</th><th class="num">Balance</th><th class="num">Reserved</th><th class="num">Available</th><th class="num">Sessions</th></tr></thead><tbody>
        <tr v-for="l in lines.data.items" :key="l.msisdn" :data-msisdn="l.msisdn">
          <td>{{ l.msisdn }}</td><td>{{ l.plan }}</td><td>{{ l.state }}</td>
          <td><span class="tag" :class="{ bad: l.barring !== 'none' }">{{ l.barring }}</span></td>
          <td class="num" data-col="balance" :class="{ neg: isNeg(l.balance) }">{{ money(l.balance) }}</td>
          <td class="num">{{ money(l.reserved) }}</td><td class="num" :class="{ neg: isNeg(l.available) }">{{ money(l.available) }}</td>
          <td class="num">{{ l.sessions ? l.sessions.length : 0 }}</td></tr>
      </tbody></table>
    </section>
    <section class="card" data-testid="events" v-if="events.length"><h2>Recent events</h2>
      <table><thead><tr><th>When (UTC)</th><th>Line</th><th>Event</th><th class="num">Balance after</th></tr></thead><tbody>
        <tr v-for="e in events" :key="e.id"><td>{{ when(e.ts) }}</td><td>{{ e.sub }}</td><td>{{ e.t }}</td><td class="num">{{ e.bal !== undefined ? money(money_of(Number(e.bal))) : "" }}</td></tr>
      </tbody></table>
    </section>
    <section class="card" data-testid="invoices"><h2>Invoices</h2>
      <p v-if="invoices.error" class="state error">{{ invoices.error }}</p>
      <p v-else-if="!invoices.data" class="state loading">Loading…</p>
      <p v-else-if="!invoices.data.items.length" class="state">No invoices yet.</p>
      <table v-else><thead><tr><th>Number</th><th>Period</th><th>Status</th><th class="num">Total</th><th></th></tr></thead><tbody>
        <tr v-for="i in invoices.data.items" :key="i.id" :data-invoice="i.number || i.id">
          <td><a href="#" @click.prevent="openInvoice(i)">{{ i.number || "draft " + i.id }}</a></td><td>{{ i.period }}</td><td>{{ i.status }}</td>
          <td class="num" :class="{ neg: isNeg(i.total) }" :data-micro="i.micro ? i.micro.total : ''">{{ money(i.total, i.currency) }}</td>
          <td><button @click="pdf(i)" data-testid="pdf">PDF</button></td></tr>
      </tbody></table>
    </section>
    <section class="card" v-if="invoice" data-testid="invoice"><h2>Invoice {{ invoice.number || invoice.id }}: lines</h2>
      <table><thead><tr><th>#</th><th>Kind</th><th>Description</th><th class="num">Amount</th><th></th></tr></thead><tbody>
        <tr v-for="l in invoice.lines" :key="l.seq" :data-line="l.seq"><td>{{ l.seq }}</td><td>{{ l.kind }}</td><td>{{ l.description }}</td>
          <td class="num" :class="{ neg: isNeg(l.amount) }">{{ money(l.amount, invoice.currency) }}</td>
          <td><button @click="explain(l)" data-testid="explain">Audit</button></td></tr>
      </tbody></table>
      <div v-if="audit" data-testid="audit"><h2>Audit of line {{ audit.seq }}</h2>
        <p v-if="audit.error" class="state error">{{ audit.error }}</p>
        <p v-else-if="!audit.data" class="state loading">Loading…</p>
        <pre v-else class="evidence">{{ JSON.stringify(audit.data, null, 2) }}</pre></div>
    </section>
  </div>`,
  setup(props) {
    const pending = reactive({ data: null, error: "" }), acct = reactive({ data: null, error: "" });
    const lines = reactive({ data: null, error: "" }), invoices = reactive({ data: null, error: "" });
    const invoice = ref(null), audit = ref(null);
    const c = () => encodeURIComponent(props.code);
    async function into(target, path) {
      try { target.data = await api(path); target.error = ""; }
      catch (e) { if (e.status !== 401) target.error = e.status === 403 ? "Your role may not read this." : e.message; }
    }
    const loadLive = () => { into(lines, `/v1/dashboard/accounts/${c()}/lines`); into(pending, `/v1/billing/accounts/${c()}/pending`); };
    function load() {
      invoice.value = audit.value = null;
      into(acct, `/v1/billing/accounts/${c()}`);
      into(invoices, `/v1/billing/invoices?account=${c()}`);
      loadLive();
    }
    let timer = null;
    function onLive(msg) {
      if (!lines.data) return;
      if (lines.data.items.some((l) => msg.lines[l.msisdn])) { clearTimeout(timer); timer = setTimeout(loadLive, 250); }
    }
    onMounted(() => { liveListeners.add(onLive); load(); });
    onBeforeUnmount(() => { liveListeners.delete(onLive); clearTimeout(timer); });
    watch(() => props.code, load);
    const events = computed(() => (lines.data ? lines.data.items.flatMap((l) => l.events || []).sort((a, b) => (a.id < b.id ? 1 : -1)).slice(0, 20) : []));
    async function openInvoice(i) { invoice.value = await api(`/v1/billing/invoices/${encodeURIComponent(i.number || i.id)}`); audit.value = null; }
    async function explain(l) {
      const ref_ = invoice.value.number || invoice.value.id;
      audit.value = { seq: l.seq, data: null, error: "" };
      try { audit.value.data = await api(`/v1/billing/invoices/${encodeURIComponent(ref_)}/lines/${l.seq}/explain`); }
      catch (e) { audit.value.error = e.message; }
    }
    async function pdf(i) {
      const ref_ = i.number || i.id;
      const r = await api(`/v1/billing/invoices/${encodeURIComponent(ref_)}/pdf`, { raw: true });
      const url = URL.createObjectURL(await r.blob());
      const a = document.createElement("a");
      a.href = url; a.download = `${props.code}-${i.period}-${ref_}.pdf`;
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    }
    return { pending, acct, lines, invoices, invoice, audit, events, openInvoice, explain, pdf, money, money_of, isNeg, when };
  },
};

const App = {
  components: { Login, Home, Scope, Account },
  template: `<div>
    <header class="top" v-if="session.access"><span class="brand">OCS dashboard</span>
      <span class="who" data-testid="who">{{ session.user }}</span><button @click="logout" data-testid="logout">Sign out</button></header>
    <main>
      <Login v-if="view.name === 'login'" />
      <Home v-else-if="view.name === 'home'" />
      <Account v-else-if="view.name === 'account'" :code="view.code" :key="'a' + view.code" />
      <Scope v-else-if="view.name === 'scope'" :level="view.level" :code="view.code" :key="view.level + view.code" />
      <p v-else class="state error" role="alert">No such page: {{ route.path }}</p>
    </main></div>`,
  setup() {
    const view = computed(() => {
      if (!session.access || route.path === "/ui/login") return { name: "login" };
      const parts = route.path.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
      if (!parts.length) return { name: "home" };
      if (parts.length === 2 && LEVELS.includes(parts[0])) {
        return parts[0] === "account" ? { name: "account", code: parts[1] } : { name: "scope", level: parts[0], code: parts[1] };
      }
      return { name: "missing" };
    });
    watch(() => session.access, (t) => { if (!t && route.path !== "/ui/login") go("/ui/login"); });
    onMounted(() => {
      if (!session.access && route.path !== "/ui/login") go("/ui/login", { next: route.path === "/ui/" ? "" : route.path + location.search });
      startLive();
    });
    return { session, view, route, logout };
  },
};

createApp(App).mount("#app");
