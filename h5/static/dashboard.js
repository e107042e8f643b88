// @ts-check
// Statistics dashboard: sessions by outcome, QA and identity pass rates and median call
// durations by branch, agent, product or period. Charts are inline SVG drawn here: no chart
// library, no CDN (the system runs on networks without internet access).
import { $, ApiError, api, setStatus, show, staffLoginForm } from "/static/api.js";

const TOKEN_KEY = "shuanglu.staff_token";
const SVG = "http://www.w3.org/2000/svg";
const OUTCOMES = [
  ["qa_passed", "质检通过", "#1b6e3a"], ["qa_rejected", "质检不通过", "#b3261e"],
  ["awaiting_qa", "待质检", "#2f5fa8"], ["in_progress", "进行中", "#9a9590"],
  ["declined", "客户拒绝", "#9a5b00"], ["identity_failed", "身份核验失败", "#7a3fa0"],
  ["expired", "已过期", "#c9bfb8"], ["aborted", "已终止", "#5f5a57"],
];
let token = sessionStorage.getItem(TOKEN_KEY);
const message = $("#message");
const fail = (err) => setStatus(message, err instanceof ApiError ? err.message : String(err), "error");
const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)}%`);
const minutes = (ms) => (ms === null || ms === undefined ? "—" : `${(ms / 60000).toFixed(1)} 分钟`);

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function legend(target, items) {
  $(target).replaceChildren(...items.map(([, label, color]) => {
    const span = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = color;
    span.append(i, label);
    return span;
  }));
}

// Horizontal bars, one row per group; `segments(row)` gives [[value, color, title], ...].
function bars(svg, rows, segments, max, format) {
  const width = 520, label = 130, row = 28, height = Math.max(rows.length * row + 24, 60);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", "100%");
  const parts = [];
  const scale = (v) => (max > 0 ? (v / max) * (width - label - 60) : 0);
  rows.forEach((r, i) => {
    const y = 8 + i * row;
    parts.push(el("text", { x: label - 6, y: y + 15, "text-anchor": "end" }, r.label));
    let x = label;
    let total = 0;
    for (const [value, color, title] of segments(r)) {
      if (!value) continue;
      const w = scale(value);
      const rect = el("rect", { x, y, width: Math.max(w, 1), height: row - 8, fill: color,
        "data-group": r.key, "data-value": value });
      rect.append(el("title", {}, `${r.label} · ${title}：${format(value)}`));
      parts.push(rect);
      x += w; total += value;
    }
    parts.push(el("text", { x: x + 6, y: y + 15 }, format(total)));
  });
  svg.replaceChildren(...parts);
}

async function enter() {
  try {
    const me = await api("GET", "/auth/me", { token });
    $("#who").textContent = `${me.display_name}（${me.username}）`;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { show("login"); return; }
    fail(err); return;
  }
  show("dashboard");
  await refresh();
}

async function refresh() {
  const q = new URLSearchParams({ group_by: $("#groupBy").value, period: $("#period").value });
  if ($("#from").value) q.set("from", $("#from").value);
  if ($("#to").value) q.set("to", $("#to").value);
  try {
    const data = await api("GET", `/stats?${q}`, { token });
    setStatus(message, "");
    render(data);
  } catch (err) { fail(err); }
}

function render(data) {
  const t = data.total;
  $("#kTotal").textContent = t.sessions;
  $("#kQa").textContent = pct(t.qa_pass_rate);
  $("#kId").textContent = pct(t.identity_pass_rate);
  $("#kCall").textContent = minutes(t.median_call_ms);
  const rows = data.items;
  legend("#outcomeLegend", OUTCOMES);
  bars($("#outcomes"), rows, (r) => OUTCOMES.map(([k, label, color]) => [r.outcomes[k], color, label]),
    Math.max(1, ...rows.map((r) => r.sessions)), (v) => `${v}`);
  legend("#rateLegend", [[0, "质检通过率", "#1b6e3a"], [0, "身份核验通过率", "#2f5fa8"]]);
  const rateRows = rows.flatMap((r) => [
    { key: `${r.key}-qa`, label: `${r.label} 质检`, value: r.qa_pass_rate, color: "#1b6e3a" },
    { key: `${r.key}-id`, label: `${r.label} 身份`, value: r.identity_pass_rate, color: "#2f5fa8" },
  ]);
  bars($("#rates"), rateRows, (r) => [[r.value ?? 0, r.color, "通过率"]], 1, pct);
  bars($("#durations"), rows, (r) => [[(r.median_call_ms ?? 0) / 60000, "#b3261e", "中位数"]],
    Math.max(1, ...rows.map((r) => (r.median_call_ms ?? 0) / 60000)), (v) => v.toFixed(1));
  $("#rows").replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    const cells = [r.label, r.sessions, r.outcomes.qa_passed, r.outcomes.qa_rejected,
      r.outcomes.awaiting_qa, pct(r.qa_pass_rate), pct(r.identity_pass_rate), minutes(r.median_call_ms)];
    tr.dataset.key = r.key;
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
    return tr;
  }));
}

staffLoginForm(TOKEN_KEY, async (t) => { token = t; await enter(); }, fail);
$("#refresh").onclick = refresh;
$("#groupBy").onchange = refresh;
if (token) enter(); else show("login");
