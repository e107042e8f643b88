// @ts-check
// QA workbench (R-40, R-41): the queue by deadline, a session's findings with the dismissal
// rules of the server (a listed reason and a note; a critical finding's dismissal only proposed
// until a second inspector approves it — four eyes), its replay, and the one verdict.
// Everything goes through the JSON API; the server decides, the page shows its Chinese answers.
import { $, ApiError, api, setStatus, show, signedInWith, staffLoginForm } from "/static/api.js";

/**
 * A session as the API summarises it (SessionSummary in api/responses.py; the members used here).
 * @typedef {{ id: string, state: string, state_label: string, [member: string]: any }} SessionSummary
 */
/**
 * A QA task of the queue (TaskView).
 * @typedef {{ session: SessionSummary, task_id: number, status: string, sampled: boolean,
 *   sample_reasons: string[], assignee_id: number | null, deadline: string, hours_left: number,
 *   verdict: string | null }} Task
 */
/**
 * A dismissal reason (ReasonView).
 * @typedef {{ code: string, label: string, note_hint: string, finding_codes: string[] }} Reason
 */
/**
 * A finding of the automated checks with its standing and dismissals (FindingView).
 * @typedef {{ id: number, code: string, severity: string, requirement: string,
 *   at_ms: number | null, step_id: string | null, message: string, standing: string,
 *   standing_label: string, dismissals: any[], [member: string]: any }} Finding
 */
/**
 * A session's QA report (QaReport).
 * @typedef {{ report: { id: number, passed: boolean, counts: any, recorded_ms: number,
 *   elapsed_ms: number, [member: string]: any },
 *   findings: Finding[], task: (Omit<Task, "session" | "task_id"> | null) }} QaReport
 */
/**
 * @typedef {{ me: import("/static/api.js").Me | null, items: Task[], reasons: Reason[],
 *   session: string | null, report: QaReport | null, confirmed: Set<number>, busy: boolean }} WorkbenchState
 */

const TOKEN_KEY = "shuanglu.staff_token";
const SEVERITY = { critical: "严重", major: "重要", minor: "一般", info: "提示" };
const FAILING = new Set(["critical", "major"]);
const SAMPLE_REASONS = { default: "常规抽检", automated_findings: "自动质检发现问题" };
let token = sessionStorage.getItem(TOKEN_KEY);
const message = $("#message");
// Exposed for tests: what the page currently shows.
/** @type {WorkbenchState} */
const state = { me: null, items: [], reasons: [], session: null, report: null,
  confirmed: new Set(), busy: false };
/** @type {any} */ (window).workbench = state;

/** The signed-in inspector's user id (set before anything is shown). */
const myId = () => (state.me ? state.me.id : null);
const fail = (err) => setStatus(message, err instanceof ApiError ? err.message : String(err), "error");
const clear = () => setStatus(message, "");
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith("aria-")) node.setAttribute(key, value); else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};
const clock = (ms) => {
  if (ms === null || ms === undefined) return "--:--";
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
};
const when = (iso) => new Date(iso).toLocaleString("zh-CN", { hour12: false,
  month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
const call = (method, path, body) => api(method, path, { token, body });

async function start() {
  try {
    state.me = await signedInWith(token, "inspect", message, "当前账号没有质检权限，请使用质检员账号登录");
  } catch (err) {
    fail(err); return;
  }
  if (!state.me) return;
  show("work");
  try {
    state.reasons = (await call("GET", "/qa/dismissal-reasons")).items;
  } catch (err) { fail(err); }
  await refresh();
  const wanted = new URLSearchParams(location.search).get("session");
  if (wanted) await openSession(wanted);
}

async function refresh() {
  try {
    const mine = $("#mine").checked ? "&mine=1" : "";
    state.items = (await call("GET", `/qa/queue?limit=200${mine}`)).items;
    const proposals = (await call("GET", "/qa/dismissals")).items;
    renderQueue();
    renderProposals(proposals);
  } catch (err) { fail(err); }
}

function renderQueue() {
  const list = $("#queue");
  list.replaceChildren();
  $("#queueEmpty").classList.toggle("hidden", state.items.length > 0);
  for (const item of state.items) {
    const hours = item.hours_left;
    const urgency = hours < 0 ? "late" : hours < 24 ? "soon" : "";
    const left = hours < 0 ? `已超时 ${Math.abs(hours).toFixed(1)} 小时` : `剩余 ${hours.toFixed(1)} 小时`;
    const li = el("li", { tabIndex: 0 },
      el("div", { className: "when" }, el("span", { textContent: `截止 ${when(item.deadline)}` }),
        el("span", { className: urgency, textContent: left })),
      el("div", { className: "muted", textContent:
        `会话 ${item.session.id.slice(0, 8)} · ${item.session.state_label} · ` +
        `${item.assignee_id === myId() ? "分配给我" : item.assignee_id ? "已分配" : "未分配"}` +
        (item.sample_reasons.length ? ` · 抽检：${item.sample_reasons.map((r) => SAMPLE_REASONS[r] || r).join("、")}` : "") }));
    li.dataset.session = item.session.id;
    li.classList.toggle("active", state.session === item.session.id);
    li.onclick = () => openSession(item.session.id);
    li.onkeydown = (e) => { if (e.key === "Enter") openSession(item.session.id); };
    list.append(li);
  }
}

function renderProposals(rows) {
  const list = $("#proposals");
  list.replaceChildren();
  $("#noProposals").classList.toggle("hidden", rows.length > 0);
  for (const d of rows) {
    const own = d.proposed_by_id === myId();
    const open = el("button", { className: "small quiet", textContent: "查看" });
    open.onclick = () => openSession(d.session_id);
    list.append(el("li", {}, el("div", { textContent:
      `会话 ${d.session_id.slice(0, 8)} · 问题 #${d.finding_id} · ${d.reason}` }),
      el("div", { className: "muted", textContent: own ? "本人提出，须由另一名质检员复核" :
        "他人提出，可由您复核" }), open));
  }
}

async function openSession(sessionId) {
  clear();
  state.session = sessionId;
  state.confirmed = new Set();
  renderQueue();
  try {
    state.report = await call("GET", `/qa/sessions/${sessionId}/report`);
  } catch (err) { fail(err); return; }
  const item = state.items.find((i) => i.session.id === sessionId);
  $("#empty").classList.add("hidden");
  $("#detail").classList.remove("hidden");
  $("#title").textContent = `会话 ${sessionId.slice(0, 8)}`;
  const { task, report: r } = /** @type {QaReport} */ (state.report);
  $("#summary").textContent = [
    item ? item.session.state_label : "",
    task ? `质检截止 ${when(task.deadline)}` : "",
    `录像时长 ${clock(r.recorded_ms)}`,
    `自动质检：${r.passed ? "未发现严重或重要问题" : "发现须处理的问题"}`,
  ].filter(Boolean).join(" · ");
  $("#comments").value = "";
  setStatus($("#verdictStatus"), "");
  $("#submitVerdict").disabled = false;
  renderFindings();
  const frame = $("#replay");
  const src = `/static/replay.html?session=${encodeURIComponent(sessionId)}`;
  if (frame.getAttribute("src") !== src) frame.setAttribute("src", src);
}

function reasonsFor(finding) {
  return state.reasons.filter((r) => r.finding_codes.includes(finding.code));
}

function renderFindings() {
  const box = $("#findings");
  box.replaceChildren();
  if (!state.report) return;
  const findings = state.report.findings;
  const failing = findings.filter((f) => FAILING.has(f.severity));
  const open = failing.filter((f) => f.standing !== "dismissed" && f.standing !== "confirmed"
    && !state.confirmed.has(f.id));
  $("#findingCounts").textContent = findings.length
    ? `共 ${findings.length} 项，其中严重/重要 ${failing.length} 项，尚待处理 ${open.length} 项`
    : "自动质检未发现问题";
  for (const f of findings) box.append(findingCard(f, findings));
  const blocked = failing.filter((f) => f.standing !== "dismissed");
  $("#verdictHint").textContent = blocked.length
    ? `还有 ${blocked.length} 项严重或重要问题未排除：可判定“不通过”（须先确认或排除每一项），` +
      "或逐项排除后判定“质检通过”。"
    : "所有严重和重要问题均已排除（或无此类问题），可以判定质检通过。";
}

function findingCard(f, all) {
  const card = el("div", { className: `finding ${f.severity}` });
  card.dataset.finding = f.id;
  card.dataset.code = f.code;
  card.dataset.standing = f.standing;
  const standing = state.confirmed.has(f.id) && f.standing === "undecided"
    ? "将确认（随结论提交）" : f.standing_label;
  card.append(el("div", { className: "head" },
    el("span", { className: "title", textContent: `#${f.id} ${f.message}` }),
    el("span", { className: `sev-${f.severity}`, textContent: SEVERITY[f.severity] || f.severity }),
    el("span", { className: "muted", textContent: `录像 ${clock(f.at_ms)} · ${f.requirement}` +
      (f.step_id ? ` · 步骤 ${f.step_id}` : "") }),
    el("span", { className: `standing ${f.standing}`, textContent: standing })));
  for (const d of f.dismissals) {
    const who = d.proposed_by_id === myId() ? "本人" : `另一名质检员（用户 ${d.proposed_by_id}）`;
    const status = { proposed: "待复核", approved: "已同意", refused: "未同意" }[d.status] || d.status;
    card.append(el("div", { className: "muted", textContent:
      `排除（${status}）：${d.reason}；说明：${d.note}；提出：${who}` +
      (d.reviewed_by_id ? `；复核：${d.reviewed_by_id === myId() ? "本人" : `用户 ${d.reviewed_by_id}`}` : "") +
      (d.review_note ? `；复核意见：${d.review_note}` : "") }));
  }
  const actions = el("div", {});
  if (f.standing === "undecided") {
    if (reasonsFor(f).length) {
      const label = f.severity === "critical" ? "申请排除（须另一名质检员复核）" : "排除此问题";
      const dismiss = el("button", { className: "small secondary", textContent: label });
      dismiss.dataset.action = "dismiss";
      dismiss.onclick = () => { dismiss.disabled = true; card.append(dismissForm(f, all)); };
      actions.append(dismiss);
    } else {
      actions.append(el("span", { className: "muted", textContent: "此类问题不能排除，只能确认后整改重录。" }));
    }
    const confirm = el("button", { className: "small quiet",
      textContent: state.confirmed.has(f.id) ? "取消确认" : "确认问题" });
    confirm.dataset.action = "confirm";
    confirm.onclick = () => {
      if (state.confirmed.has(f.id)) state.confirmed.delete(f.id); else state.confirmed.add(f.id);
      if (state.confirmed.size) $('input[value="reject"]').checked = true;
      renderFindings();
    };
    actions.append(confirm);
  } else if (f.standing === "dismissal_proposed") {
    const pending = f.dismissals.find((d) => d.status === "proposed");
    if (pending && pending.proposed_by_id === myId()) {
      actions.append(el("span", { className: "muted",
        textContent: "您提出的排除申请须由另一名质检员复核同意后生效。" }));
    } else {
      const note = el("input", { placeholder: "复核意见（不同意时必填）", maxLength: 500 });
      note.className = "review-note";
      const approve = el("button", { className: "small", textContent: "同意排除" });
      approve.dataset.action = "approve";
      const refuse = el("button", { className: "small secondary", textContent: "不同意" });
      refuse.dataset.action = "refuse";
      const review = (verb) => act(() => call("POST",
        `/qa/sessions/${state.session}/findings/${f.id}/dismissal/${verb}`,
        { note: note.value.trim() }), verb === "approve" ? "已同意排除" : "已退回排除申请");
      approve.onclick = () => review("approve");
      refuse.onclick = () => review("refuse");
      actions.append(el("div", { className: "dismiss-form" }, note, approve, refuse));
    }
  }
  card.append(actions);
  return card;
}

function dismissForm(f, all) {
  const form = el("div", { className: "dismiss-form" });
  const select = el("select", { "aria-label": "排除理由" });
  select.className = "reason";
  select.append(el("option", { value: "", textContent: "请选择规定的排除理由" }));
  for (const r of reasonsFor(f)) select.append(el("option", { value: r.code, textContent: r.label }));
  const hint = el("p", { className: "muted", textContent: "" });
  const note = el("textarea", { maxLength: 500, rows: 2, placeholder: "说明回放核实的情况" });
  note.className = "note";
  const dup = el("select", { "aria-label": "重复的问题" });
  dup.className = "duplicate hidden";
  for (const other of all.filter((o) => o.id !== f.id)) {
    dup.append(el("option", { value: String(other.id), textContent: `#${other.id} ${other.message}` }));
  }
  select.onchange = () => {
    const reason = state.reasons.find((r) => r.code === select.value);
    hint.textContent = reason ? `备注须${reason.note_hint}` : "";
    dup.classList.toggle("hidden", select.value !== "duplicate");
  };
  const submit = el("button", { className: "small",
    textContent: f.severity === "critical" ? "提交排除申请" : "确认排除" });
  submit.dataset.action = "submit-dismissal";
  submit.onclick = () => act(() => call("POST",
    `/qa/sessions/${state.session}/findings/${f.id}/dismissal`, {
      reason_code: select.value, note: note.value.trim(),
      duplicate_of: select.value === "duplicate" ? Number(dup.value) : null,
    }), f.severity === "critical" ? "排除申请已提交，等待另一名质检员复核" : "问题已排除");
  const cancel = el("button", { className: "small quiet", textContent: "取消" });
  cancel.onclick = () => renderFindings();
  form.append(el("label", { textContent: "排除理由" }), select, hint, dup,
    el("label", { textContent: "说明" }), note, submit, cancel);
  return form;
}

// One change through the API, then the session and the queue as the server now has them.
async function act(request, done) {
  if (state.busy) return;
  state.busy = true;
  try {
    await request();
    const id = state.session;
    await refresh();
    await openSession(id);
    setStatus(message, done, "ok");
  } catch (err) { fail(err); } finally { state.busy = false; }
}

async function submitVerdict() {
  const verdict = $('input[name="verdict"]:checked').value;
  const decisions = verdict === "reject"
    ? [...state.confirmed].map((id) => ({ finding_id: id, decision: "confirmed" })) : [];
  const button = $("#submitVerdict");
  button.disabled = true;
  try {
    const result = await call("POST", `/qa/sessions/${state.session}/verdict`, {
      verdict, comments: $("#comments").value.trim(), decisions });
    const text = result.verdict === "pass" ? "质检结论已提交：质检通过"
      : "质检结论已提交：不通过，已生成整改重录任务";
    setStatus($("#verdictStatus"), text, "ok");
    setStatus(message, text, "ok");
    state.confirmed = new Set();
    state.report = await call("GET", `/qa/sessions/${state.session}/report`);
    renderFindings();
    $("#verdictHint").textContent = "该会话已完成质检。";
    // Decided: nothing on this session can change any more.
    document.querySelectorAll("#findings button, #findings select, #findings textarea, " +
      "#findings input").forEach((c) => { /** @type {HTMLInputElement} */ (c).disabled = true; });
    await refresh();
  } catch (err) {
    setStatus($("#verdictStatus"), err instanceof ApiError ? err.message : String(err), "error");
    button.disabled = false;
  }
}

$("#submitVerdict").onclick = submitVerdict;
$("#refresh").onclick = refresh;
$("#mine").onchange = refresh;
$("#openReplay").onclick = () => {
  if (state.session) window.open(`/static/replay.html?session=${encodeURIComponent(state.session)}`);
};
$("#logout").onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.href = location.pathname;
};
staffLoginForm(TOKEN_KEY, async (t) => { token = t; clear(); await start(); }, fail);
start();
