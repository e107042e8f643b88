// The agent console: log in, pass the pre-check (licence, training, position, network: R-03)
// before anything else, create sessions, send invitations, follow the customer live, drive the
// script (explain and resume after a negative answer, R-24), complete or abort.
import { $, ApiError, api, live, setStatus, show, staffLoginForm } from "/static/api.js";
import { Call } from "/static/call.js";

const TOKEN_KEY = "shuanglu.staff_token";
let token = sessionStorage.getItem(TOKEN_KEY);
let location_ = null;
let current = null;
let stream = null;
let call = null;
const IN_CALL = new Set(["in_call", "disclosing", "signing"]);

function joinCall(id) {
  if (call) return;
  call = new Call({ offerPath: `/sessions/${id}/call/offer`, token,
    remoteVideo: $("#remoteVideo"), selfVideo: $("#selfVideo") });
  call.start().catch((err) => { call = null; fail(err); });
}

function leaveCall() { if (call) { call.close(); call = null; } }
const message = $("#message");
const fail = (err) => setStatus(message, err instanceof ApiError ? err.message : String(err), "error");

function position() {
  return new Promise((resolve, reject) => {
    if (!navigator.geolocation) { reject(new Error("浏览器不支持定位")); return; }
    navigator.geolocation.getCurrentPosition(
      (p) => resolve({ lat: p.coords.latitude, lng: p.coords.longitude, accuracy_m: p.coords.accuracy }),
      () => reject(new Error("无法获取定位，请允许浏览器使用位置信息")),
      { enableHighAccuracy: true, timeout: 15000 });
  });
}

async function enter() {
  const me = await api("GET", "/auth/me", { token });
  $("#who").textContent = `${me.display_name}（${me.username}）`;
  setStatus(message, "");
  show("precheck");
}

async function precheck() {
  const box = $("#precheckResult");
  try {
    location_ = await position();
    const result = await api("POST", "/agent/precheck", { token, body: { location: location_ } });
    if (result.passed) {
      setStatus(box, `检查通过：${result.premises.name}（网络 ${result.ip}），执业证有效期至 ${result.licence_expires}`, "ok");
      await home();
    } else {
      setStatus(box, result.failures.map((f) => f.message).join("；"), "error");
    }
  } catch (err) { setStatus(box, err.message, "error"); }
}

let products = [];

// Each product's published script may need values of its own (e.g. the annuity start age).
function productFields() {
  const product = products.find((p) => p.code === $("#product").value);
  if (!product) return;
  $("#sumBox").classList.toggle("hidden", !product.needs_sum_insured);
  $("#extraValues").replaceChildren(...product.extra_values.map((v) => {
    const wrap = document.createElement("div");
    const label = document.createElement("label");
    label.textContent = v.label;
    label.htmlFor = `extra-${v.name}`;
    const input = document.createElement("input");
    input.id = `extra-${v.name}`; input.dataset.name = v.name; input.placeholder = v.description;
    wrap.append(label, input);
    return wrap;
  }));
}

async function home() {
  show("home");
  products = (await api("GET", "/products", { token })).items;
  $("#product").replaceChildren(...products.map((p) => new Option(`${p.name}（${p.code}）`, p.code)));
  productFields();
  await listSessions();
}

async function listSessions() {
  const result = await api("GET", "/sessions?limit=50", { token });
  $("#sessions").replaceChildren(...result.items.map((s) => {
    const row = document.createElement("tr");
    row.className = "clickable";
    row.innerHTML = "<td></td><td></td><td></td>";
    row.cells[0].textContent = new Date(s.created_at).toLocaleString("zh-CN");
    row.cells[1].textContent = s.state_label;
    row.cells[2].textContent = `${s.steps_done}/${s.step_count}`;
    row.onclick = () => openSession(s.id);
    return row;
  }));
}

async function create() {
  try {
    const order = await api("POST", "/orders", { token, body: {
      application_no: $("#appNo").value.trim(), product_code: $("#product").value,
      customer: { name: $("#custName").value.trim(), id_number: $("#custId").value.trim(),
                  phone: $("#custPhone").value.trim() || null },
      premium: $("#premium").value.trim(), payment_years: Number($("#years").value),
      payment_mode: $("#mode").value,
      sum_insured: $("#sumBox").classList.contains("hidden") ? null : ($("#sumInsured").value.trim() || null),
      extra_values: Object.fromEntries([...document.querySelectorAll("#extraValues input")]
        .map((i) => [i.dataset.name, i.value.trim()]).filter(([, v]) => v)) } });
    const session = await api("POST", "/sessions", { token, body: { order_id: order.id, location: location_ } });
    await openSession(session.id);
  } catch (err) { fail(err); }
}

const ACTIONS = {
  created: [["发送邀请", invite]],
  invited: [["重新发送邀请", invite]],
  opened: [["重新发送邀请", invite]],
  identity_verified: [["开始通话", () => act("/call/start", { location: location_ })]],
  in_call: [["开始讲解话术", () => act("/script/start")], ["通话中断", interrupt]],
  disclosing: [["通话中断", interrupt]],
  signing: [["完成录制", () => act("/complete")], ["通话中断", interrupt]],
  interrupted: [["断点续录", () => act("/call/resume", { location: location_ })]],
};
const ABORTABLE = new Set(["created", "invited", "opened", "consented", "identity_verified",
  "in_call", "disclosing", "signing", "interrupted"]);

async function act(path, body) {
  try { await api("POST", `/sessions/${current.id}${path}`, { token, body }); await refresh(); }
  catch (err) { fail(err); }
}

async function invite() {
  try {
    const result = await api("POST", `/sessions/${current.id}/invitation`, { token, body: { channel: "link" } });
    $("#inviteLink").textContent = result.url;
    $("#invitation").classList.remove("hidden");
    await refresh();
  } catch (err) { fail(err); }
}

async function interrupt() {
  const reason = prompt("中断原因", "网络中断");
  if (reason) await act("/call/interrupt", { reason });
}

function renderActions(s) {
  const buttons = (ACTIONS[s.state] || []).map(([label, handler]) => {
    const b = document.createElement("button"); b.textContent = label; b.onclick = handler; return b;
  });
  const step = s.current_step;
  if (s.state === "disclosing" && s.paused) {
    const b = document.createElement("button");
    b.textContent = "已解释说明，继续";
    b.onclick = () => { const note = prompt("解释说明内容（将记录在时间轴）"); if (note) act("/script/resume", { note }); };
    buttons.unshift(b);
  } else if (s.state === "disclosing" && step && step.answer === "none") {
    const b = document.createElement("button");
    b.textContent = "已完成本项，下一步";
    b.onclick = () => act("/script/advance", { step_id: step.id });
    buttons.unshift(b);
  }
  if (ABORTABLE.has(s.state)) {
    const b = document.createElement("button");
    b.className = "secondary"; b.textContent = "终止录制";
    b.onclick = () => { const reason = prompt("终止原因"); if (reason) act("/abort", { reason }); };
    buttons.push(b);
  }
  $("#actions").replaceChildren(...buttons);
}

async function refreshSession() {
  const id = current.id;
  const s = await api("GET", `/sessions/${id}`, { token });
  const timeline = await api("GET", `/sessions/${id}/events`, { token });
  if (!current || current.id !== id) return; // another session was opened meanwhile
  current = s;
  $("#sessionState").textContent = s.state_label + (s.paused ? "（客户需要解释）" : "");
  const c = s.order.customer;
  $("#sessionInfo").textContent = `${s.order.application_no} · ${s.order.product.name} · 投保人 ${c.name}（${s.customer_age} 岁）`;
  const answers = new Map();
  for (const a of timeline.acknowledgements) answers.set(a.step_index, a.answer);
  $("#steps").replaceChildren(...s.steps.map((step, i) => {
    const li = document.createElement("li");
    const done = i < s.steps_done;
    li.className = done ? "done" : (s.current_step && s.current_step.index === i ? "current" : "");
    const answer = answers.get(i);
    li.textContent = `${step.text}${answer && answer !== "affirmative" ? "（客户：不清楚）" : ""}`;
    return li;
  }));
  $("#stepBar").style.width = `${s.step_count ? (100 * s.steps_done) / s.step_count : 0}%`;
  renderActions(s);
  if (IN_CALL.has(s.state)) joinCall(s.id); else if (!["interrupted"].includes(s.state)) leaveCall();
}

// One refresh at a time, and one more after it when something changed meanwhile: the live
// socket pushes a snapshot per event, and overlapping refreshes could finish out of order and
// leave an older state on screen (this looked like a stalled socket during calls).
let refreshing = null;
let refreshAgain = false;
function refresh() {
  if (refreshing) { refreshAgain = true; return refreshing; }
  refreshing = (async () => {
    try {
      do { refreshAgain = false; await refreshSession(); } while (refreshAgain);
    } finally { refreshing = null; }
  })();
  return refreshing;
}

async function openSession(id) {
  current = { id };
  $("#invitation").classList.add("hidden");
  show("session");
  if (stream) stream.close();
  stream = live(() => ({ role: "staff", token, session_id: id }), (msg) => {
    if (msg.type === "snapshot" && current && current.id === id) refresh().catch(fail);
  });
  await refresh();
}

async function init() {
  staffLoginForm(TOKEN_KEY, async (t) => { token = t; await enter(); }, fail);
  $("#runPrecheck").onclick = precheck;
  $("#create").onclick = create;
  $("#product").onchange = productFields;
  $("#refresh").onclick = () => listSessions().catch(fail);
  $("#back").onclick = () => {
    if (stream) stream.close(); stream = null; leaveCall(); home().catch(fail);
  };
  $("#copyLink").onclick = () => navigator.clipboard.writeText($("#inviteLink").textContent)
    .then(() => setStatus(message, "已复制", "ok"), () => setStatus(message, "请手动复制链接", "error"));
  if (token) { try { await enter(); return; } catch (err) { sessionStorage.removeItem(TOKEN_KEY); } }
  show("login");
}

init();
