// @ts-check
// QA replay (R-41): the recording with its timeline beside it. Every mark (step, answer,
// identity result, presence mark, interruption, finding) seeks the video to its time in the
// recording. Segments are separate files on the session's clock: seeking loads the segment
// that holds the time, and playback runs on into the next one. The playback copy (both parties
// side by side, TTS mixed in) is offered beside them once the background job has made it.
// Opening the page, playing and every download are audited by the server. The after-call
// transcript (what each party said, on the same clock) is listed beside the timeline: the search
// box filters its lines, and clicking a line seeks the video there.
import { $, ApiError, api, setStatus, show, staffLoginForm } from "/static/api.js";

/**
 * A recorded segment with its ticket URL, on the session clock.
 * @typedef {{ id: number, segment: number, start_ms: number, end_ms: number, url: string,
 *   [member: string]: any }} Segment
 */
/**
 * GET /qa/sessions/{id}/replay (ReplayView in api/responses.py; the members used here).
 * @typedef {{ session: { duration_ms: number, [member: string]: any }, steps: any[], marks: any[],
 *   recordings: Record<string, Segment[]>, findings: any[], conversation: any[],
 *   playback: any }} ReplayView
 */
/**
 * GET /qa/sessions/{id}/transcript (TranscriptView).
 * @typedef {{ status: string, label: string, lines: { party: string, party_label: string,
 *   start_ms: number, end_ms: number, clock: string, text: string }[] }} Transcript
 */
/**
 * @typedef {{ position_ms: number, segment: Segment | null, seeking: boolean,
 *   view: ReplayView | null, transcript: Transcript | null }} ReplayState
 */

const TOKEN_KEY = "shuanglu.staff_token";
const KIND_LABELS = { step: "话术步骤", answer: "客户答复", identity: "身份核验",
  liveness: "实时活体", presence: "在场标记", network: "网络", interruption: "中断",
  finding: "质检问题" };
const SEVERITY = { critical: "严重", major: "重要", minor: "一般", info: "提示" };
let token = sessionStorage.getItem(TOKEN_KEY);
const message = $("#message");
const video = $("#video");
const agentVideo = $("#agentVideo");
// Exposed for tests and for the curious: where the player is on the session's clock.
/** @type {ReplayState} */
const state = { position_ms: 0, segment: null, seeking: false, view: null, transcript: null };
/** @type {any} */ (window).replayState = state;
/** The loaded replay (set before anything is drawn). */
const loadedView = () => /** @type {ReplayView} */ (state.view);
const hidden = new Set();

const fail = (err) => setStatus(message, err instanceof ApiError ? err.message : String(err), "error");
const clock = (ms) => {
  if (ms === null || ms === undefined) return "--:--";
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
};

function sessionId() {
  return new URLSearchParams(location.search).get("session");
}

async function load() {
  const id = sessionId();
  if (!id) { setStatus(message, "缺少会话编号（?session=…）", "error"); return; }
  try {
    const me = await api("GET", "/auth/me", { token });
    $("#who").textContent = `${me.display_name}（${me.username}）`;
    state.view = await api("GET", `/qa/sessions/${id}/replay`, { token });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { show("login"); return; }
    fail(err); return;
  }
  render(state.view);
  show("replay");
  await seek(0, false);
  await loadTranscript(id);
}

// The transcript is its own (audited) read: it may still be in the making when the page opens.
async function loadTranscript(id) {
  try {
    state.transcript = await api("GET", `/qa/sessions/${id}/transcript`, { token });
  } catch (err) { fail(err); return; }
  renderTranscript();
}

// Case and spaces do not matter; punctuation in the query is kept (a line's text has it too).
const folded = (text) => text.toLowerCase().replace(/\s+/g, "");

function highlighted(text, query) {
  const span = document.createElement("span");
  if (!query) { span.textContent = text; return span; }
  let rest = text;
  while (rest) {
    const at = folded(rest).indexOf(query);
    if (at < 0 || query.length === 0) { span.append(rest); break; }
    // Map the folded index back (the text's own spaces were removed for matching).
    let i = 0, seen = 0;
    while (seen < at) { if (!/\s/.test(rest[i])) seen++; i++; }
    while (/\s/.test(rest[i])) i++;
    let j = i, taken = 0;
    while (taken < query.length && j < rest.length) { if (!/\s/.test(rest[j])) taken++; j++; }
    span.append(rest.slice(0, i));
    const mark = document.createElement("mark");
    mark.textContent = rest.slice(i, j);
    span.append(mark);
    rest = rest.slice(j);
  }
  return span;
}

function renderTranscript() {
  const t = state.transcript;
  if (!t) return;
  const query = folded($("#transcriptSearch").value || "");
  $("#transcriptStatus").textContent = t.label + (t.status === "done" ? `（${t.lines.length} 条）` : "");
  const shown = t.lines.filter((line) => !query || folded(line.text).includes(query));
  $("#transcript").replaceChildren(...shown.map((line) => {
    const li = document.createElement("li");
    li.className = line.party;
    li.dataset.atMs = String(line.start_ms);
    li.dataset.party = line.party;
    const time = document.createElement("time");
    time.textContent = line.clock;
    const party = document.createElement("span");
    party.className = "party";
    party.textContent = line.party_label;
    li.append(time, party, highlighted(line.text, query));
    li.title = "点击跳转到此处";
    li.onclick = () => seek(line.start_ms, true);
    return li;
  }));
  const count = $("#transcriptCount");
  count.textContent = query ? `找到 ${shown.length} 条` : "";
  count.classList.toggle("hidden", !query);
}

$("#transcriptSearch").addEventListener("input", () => renderTranscript());

/** @param {string} kind @returns {Segment[]} */
function segmentsOf(kind) {
  return (loadedView().recordings[kind] || []).slice().sort((a, b) => a.start_ms - b.start_ms);
}

function render(view) {
  const s = view.session;
  $("#title").textContent = `会话回放 · ${s.application_no}`;
  $("#summary").textContent = `${s.product} · 状态：${s.state_label} · 客户年龄：${s.customer_age ?? "—"}`
    + ` · 录制开始：${s.recording_started_at ? new Date(s.recording_started_at).toLocaleString("zh-CN") : "—"}`
    + (s.manifest_chain ? ` · 封存链：${s.manifest_chain.slice(0, 16)}…` : "");
  $("#duration").textContent = clock(s.duration_ms);
  renderFilters(view);
  renderMarks(view);
  renderTrack(view);
  renderFindings(view);
  renderSegments(view);
  renderChat(view);
  renderPlayback(view.playback);
}

// The playback copy: one file with both parties, on the same clock as the marks. It loads only
// when played (preload="none"), so opening the page does not count as playing it.
function renderPlayback(copy) {
  const status = $("#playbackStatus"), player = $("#playback"), link = $("#playbackDownload");
  const problems = $("#playbackProblems");
  const ready = copy && (copy.status === "ok" || copy.status === "partial");
  status.textContent = copy ? copy.label : "回放副本生成中";
  if (ready) status.textContent += `（时长 ${clock(copy.duration_ms)}，SHA-256 ${copy.sha256.slice(0, 16)}…）`;
  player.classList.toggle("hidden", !ready);
  link.classList.toggle("hidden", !ready);
  if (ready && player.dataset.url !== copy.url) {
    player.dataset.url = copy.url;
    player.src = copy.url;
    link.href = `${copy.url}?download=1`;
  }
  const items = (copy && copy.problems) || [];
  problems.replaceChildren(...items.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
  problems.classList.toggle("hidden", items.length === 0);
}

function renderFilters(view) {
  const kinds = [...new Set(view.marks.map((m) => m.kind))];
  $("#filters").replaceChildren(...kinds.map((kind) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = !hidden.has(kind);
    box.onchange = () => { box.checked ? hidden.delete(kind) : hidden.add(kind); renderMarks(view); };
    label.append(box, KIND_LABELS[kind] || kind);
    return label;
  }));
}

function renderMarks(view) {
  $("#marks").replaceChildren(...view.marks.filter((m) => !hidden.has(m.kind)).map((m, i) => {
    const li = document.createElement("li");
    li.dataset.kind = m.kind;
    li.dataset.atMs = m.at_ms ?? "";
    li.dataset.index = String(i);
    if (m.severity) li.dataset.severity = m.severity;
    const time = document.createElement("time");
    time.textContent = m.before_call ? "通话前" : clock(m.at_ms);
    const dot = document.createElement("span");
    dot.className = `dot k-${m.kind}`;
    const text = document.createElement("span");
    text.textContent = m.label;
    if (m.severity) text.className = `sev-${m.severity}`;
    if (m.message) text.title = m.message;
    li.append(time, dot, text);
    if (m.at_ms !== null && m.at_ms !== undefined) li.onclick = () => seek(m.at_ms, true);
    return li;
  }));
}

function renderTrack(view) {
  const total = Math.max(view.session.duration_ms, 1);
  const track = $("#track");
  const pct = (ms) => `${Math.min(100, Math.max(0, (ms / total) * 100))}%`;
  const parts = segmentsOf("customer_av").map((seg) => {
    const el = document.createElement("div");
    el.className = "seg"; el.style.left = pct(seg.start_ms);
    el.style.width = pct(seg.end_ms - seg.start_ms);
    return el;
  });
  for (const m of view.marks) {
    if (m.at_ms === null || m.at_ms === undefined || m.kind === "step") continue;
    const el = document.createElement("div");
    el.className = `tick k-${m.kind}`; el.style.left = pct(m.at_ms); el.title = `${clock(m.at_ms)} ${m.label}`;
    parts.push(el);
  }
  const head = document.createElement("div");
  head.className = "head"; head.id = "head";
  parts.push(head);
  track.replaceChildren(...parts);
  track.onclick = (e) => {
    const box = track.getBoundingClientRect();
    seek(Math.round(((e.clientX - box.left) / box.width) * total), true);
  };
}

function renderFindings(view) {
  const rows = view.findings.map((f) => {
    const tr = document.createElement("tr");
    tr.className = "clickable";
    tr.innerHTML = "<td></td><td></td><td></td><td></td>";
    tr.cells[0].textContent = clock(f.at_ms);
    tr.cells[1].textContent = SEVERITY[f.severity] || f.severity;
    tr.cells[1].className = `sev-${f.severity}`;
    tr.cells[2].textContent = f.requirement;
    tr.cells[3].textContent = f.message + (f.decision ? `（${f.decision === "confirmed" ? "已确认" : "已排除"}）` : "");
    if (f.at_ms !== null) tr.onclick = () => seek(f.at_ms, true);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.innerHTML = '<td colspan="4">自动质检未发现问题</td>';
    rows.push(tr);
  }
  $("#findings").replaceChildren(...rows);
}

function renderSegments(view) {
  const links = [];
  for (const [kind, list] of Object.entries(view.recordings)) {
    for (const seg of list) {
      const a = document.createElement("a");
      a.href = `${seg.url}?download=1`;
      a.textContent = `${{ customer_av: "客户", agent_av: "销售人员", tts: "播报" }[kind] || kind} 第${seg.segment}段（${clock(seg.start_ms)}）`;
      a.title = `SHA-256 ${seg.sha256}`;
      links.push(a);
    }
  }
  $("#segments").replaceChildren(...links);
}

function renderChat(view) {
  const items = view.conversation.map((m) => {
    const li = document.createElement("li");
    li.className = m.direction === "out" ? "out" : "in";
    li.textContent = `${new Date(m.at).toLocaleTimeString("zh-CN")} ${m.text || `[${m.type}]`}`;
    if (m.offset_ms >= 0 && m.offset_ms <= loadedView().session.duration_ms) li.onclick = () => seek(m.offset_ms, true);
    return li;
  });
  $("#chat").replaceChildren(...items);
  $("#noChat").classList.toggle("hidden", items.length > 0);
}

/** @param {Segment[]} list @param {number} ms @returns {Segment | null} */
function segmentAt(list, ms) {
  return list.find((s) => ms >= s.start_ms && ms < s.end_ms)
    || list.find((s) => s.start_ms >= ms) || list[list.length - 1] || null;
}

/** @param {HTMLMediaElement} el @returns {Promise<void>} */
function loaded(el) {
  return new Promise((resolve, reject) => {
    if (el.readyState >= 1) { resolve(); return; }
    el.addEventListener("loadedmetadata", () => resolve(), { once: true });
    el.addEventListener("error", () => reject(new Error("录像无法加载")), { once: true });
  });
}

/** @param {HTMLMediaElement} el @param {Segment[]} list @param {number} ms */
async function place(el, list, ms) {
  const seg = segmentAt(list, ms);
  if (!seg) return null;
  if (el.dataset.segment !== String(seg.id)) {
    el.dataset.segment = String(seg.id);
    el.src = seg.url;
    await loaded(el);
  }
  el.currentTime = Math.max(0, (ms - seg.start_ms) / 1000);
  return seg;
}

// Seek both parties to `ms` on the session clock; `play` keeps playing from there.
async function seek(ms, play) {
  state.seeking = true;
  try {
    const seg = await place(video, segmentsOf("customer_av"), ms);
    await place(agentVideo, segmentsOf("agent_av"), ms).catch(() => null);
    state.segment = seg;
    if (seg) {
      await new Promise(/** @param {(value?: unknown) => void} resolve */ (resolve) => {
        if (!video.seeking) { resolve(); return; }
        video.addEventListener("seeked", () => resolve(), { once: true });
      });
    }
    update();
    // The copy runs 1:1 on the session clock: once it is loaded, marks seek it too.
    const copy = $("#playback");
    if (copy.readyState >= 1) copy.currentTime = ms / 1000;
    if (play) { video.play().catch(() => {}); agentVideo.play().catch(() => {}); }
  } catch (err) { fail(err); } finally { state.seeking = false; }
}

function update() {
  const seg = state.segment;
  if (!seg) return;
  state.position_ms = Math.round(seg.start_ms + video.currentTime * 1000);
  $("#position").textContent = clock(state.position_ms);
  $("#segmentInfo").textContent = `客户录像第 ${seg.segment} 段`;
  const total = Math.max(loadedView().session.duration_ms, 1);
  const head = $("#head");
  if (head) head.style.left = `${Math.min(100, (state.position_ms / total) * 100)}%`;
  /** @type {HTMLElement | null} */
  let active = null;
  for (const el of document.querySelectorAll("#marks li")) {
    const li = /** @type {HTMLElement} */ (el);
    const at = Number(li.dataset.atMs);
    if (li.dataset.atMs !== "" && at <= state.position_ms + 250) active = li;
    li.classList.remove("active");
  }
  if (active) active.classList.add("active");
  /** @type {HTMLElement | null} */
  let line = null;
  for (const el of document.querySelectorAll("#transcript li")) {
    const li = /** @type {HTMLElement} */ (el);
    if (Number(li.dataset.atMs) <= state.position_ms + 250) line = li;
    li.classList.remove("active");
  }
  if (line) line.classList.add("active");
}

video.addEventListener("timeupdate", () => { if (!state.seeking) update(); });
video.addEventListener("ended", async () => {
  // Continue in the next segment of the same track (segments meet on the session clock).
  const list = segmentsOf("customer_av");
  const next = state.segment ? list[list.indexOf(state.segment) + 1] : list[0];
  if (next) await seek(next.start_ms, true);
});
staffLoginForm(TOKEN_KEY, async (t) => { token = t; await load(); }, fail);

if (token) load(); else show("login");
