// @ts-check
// Script editor for product owners (R-21, R-22, R-23): edit a version's YAML with the lint run
// as you type (POST /scripts/lint, nothing stored), save it as a new draft, compare it with the
// published version, submit, approve as a second product owner (four eyes: never the author or
// the submitter — the server refuses), publish, and hear a step's speech as the call plays it.
import { $, ApiError, api, setStatus, show, signedInWith, staffLoginForm } from "/static/api.js";

/**
 * A script version (ScriptVersionView in api/responses.py; `yaml` only from GET /scripts/{id}).
 * @typedef {{ id: number, product_id: number, version: number, status: string,
 *   content_hash: string, title: string, created_by: number | null, submitted_by: number | null,
 *   approved_by: number | null, created_at: string, published_at: string | null, lint: any,
 *   yaml?: string, audio?: any }} ScriptVersion
 */
/**
 * POST /scripts/lint.
 * @typedef {{ loads: boolean, publishable: boolean, findings: { code: string, severity: string,
 *   message: string, step_id: string | null, line: number | null }[] }} LintResult
 */
/**
 * @typedef {{ me: import("/static/api.js").Me | null, versions: ScriptVersion[],
 *   selected: ScriptVersion | null, lint: LintResult | null, linting: number, lintSeq: number,
 *   dirty: boolean }} EditorState
 */

const TOKEN_KEY = "shuanglu.staff_token";
const STATUS = { draft: "草稿", submitted: "待审核", approved: "已审核", published: "已发布",
  retired: "已停用" };
let token = sessionStorage.getItem(TOKEN_KEY);
const message = $("#message");
const editor = $("#yaml");
// Exposed for tests: what the page shows and the lint's last answer.
/** @type {EditorState} */
const state = { me: null, versions: [], selected: null, lint: null,
  linting: 0, lintSeq: 0, dirty: false };
/** @type {any} */ (window).scriptEditor = state;
/** The signed-in product owner (set before anything is shown). */
const me = () => /** @type {import("/static/api.js").Me} */ (state.me);
/** The open version (set before its controls are shown). */
const selected = () => /** @type {ScriptVersion} */ (state.selected);

const fail = (err) => setStatus(message, err instanceof ApiError ? err.message : String(err), "error");
const clear = () => setStatus(message, "");
const call = (method, path, body) => api(method, path, { token, body });
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};
const when = (iso) => (iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "—");
const person = (id) => (id === null || id === undefined ? "—"
  : id === me().id ? `本人（${me().display_name}）` : `用户 ${id}`);

async function start() {
  try {
    state.me = await signedInWith(token, "edit_script", message, "当前账号没有编辑话术的权限，请使用产品负责人账号登录");
  } catch (err) {
    fail(err); return;
  }
  if (!state.me) return;
  show("edit");
  await loadVersions();
}

async function loadVersions() {
  try {
    state.versions = (await call("GET", "/scripts")).items;
  } catch (err) { fail(err); return; }
  renderVersions();
}

function byProduct() {
  /** @type {Map<number, ScriptVersion[]>} */
  const groups = new Map();
  for (const v of state.versions) {
    if (!groups.has(v.product_id)) groups.set(v.product_id, []);
    /** @type {ScriptVersion[]} */ (groups.get(v.product_id)).push(v);
  }
  return groups;
}

function renderVersions() {
  const list = $("#versions");
  list.replaceChildren();
  for (const [, versions] of byProduct()) {
    const latest = versions[versions.length - 1];
    list.append(el("li", { className: "product", textContent: latest.title }));
    for (const v of [...versions].reverse()) {
      const li = el("li", { className: "version", tabIndex: 0 },
        el("span", { textContent: `第 ${v.version} 版` }),
        el("span", { className: `badge ${v.status}`, textContent: STATUS[v.status] || v.status }));
      li.dataset.version = v.id;
      li.dataset.status = v.status;
      li.classList.toggle("active", state.selected && state.selected.id === v.id);
      li.onclick = () => openVersion(v.id);
      li.onkeydown = (e) => { if (e.key === "Enter") openVersion(v.id); };
      list.append(li);
    }
  }
}

async function openVersion(id) {
  if (state.dirty && !confirm("当前修改尚未保存为草稿，确定放弃修改吗？")) return;
  clear();
  try {
    state.selected = await call("GET", `/scripts/${id}`);
  } catch (err) { fail(err); return; }
  const v = selected();
  editor.value = v.yaml;
  editor.scrollTop = 0;
  editor.disabled = false;
  state.dirty = false;
  $("#editorTitle").textContent = `${v.title} · 第 ${v.version} 版（${STATUS[v.status] || v.status}）`;
  $("#editorHint").textContent = "直接修改下方内容；保存时自动设为下一个版本号并保存为新草稿。";
  $("#save").disabled = true;
  renderVersions();
  renderReview();
  await Promise.all([lintNow(), loadSteps(v), loadDiff(v)]);
}

function published(productId) {
  return state.versions.find((v) => v.product_id === productId && v.status === "published");
}

function nextNumber(productId) {
  return Math.max(0, ...state.versions.filter((v) => v.product_id === productId)
    .map((v) => v.version)) + 1;
}

async function loadDiff(v) {
  const base = published(v.product_id);
  const summary = $("#diffSummary");
  const pre = $("#diff");
  pre.classList.add("hidden");
  if (!base) { summary.textContent = "该产品还没有已发布的版本。"; return; }
  if (base.id === v.id) { summary.textContent = "当前打开的就是已发布版本。"; return; }
  try {
    const d = await call("GET", `/scripts/${base.id}/diff/${v.id}`);
    summary.textContent = `与已发布的第 ${base.version} 版相比：${d.summary}`;
    pre.replaceChildren();
    for (const line of d.unified.split("\n")) {
      const kind = line.startsWith("@@") ? "hunk" : line.startsWith("+") && !line.startsWith("+++")
        ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "";
      pre.append(kind ? el("span", { className: kind, textContent: line }) : `${line}\n`);
    }
    pre.classList.toggle("hidden", !d.unified);
  } catch (err) { summary.textContent = err instanceof Error ? err.message : String(err); }
}

// --- live lint -----------------------------------------------------------------------------

let lintTimer = null;
editor.addEventListener("input", () => {
  state.dirty = true;
  $("#save").disabled = false;
  clearTimeout(lintTimer);
  lintTimer = setTimeout(lintNow, 400);
});

async function lintNow() {
  const seq = ++state.lintSeq;
  state.linting++;
  $("#lintState").textContent = "检查中…";
  $("#lintState").className = "lint-state";
  try {
    const result = await call("POST", "/scripts/lint", { yaml: editor.value || " ",
      source_name: "editor.yaml" });
    if (seq === state.lintSeq) { state.lint = result; renderLint(); }
  } catch (err) {
    if (seq === state.lintSeq) { $("#lintState").textContent = ""; fail(err); }
  } finally { state.linting--; }
}

function renderLint() {
  if (!state.lint) return;
  const { findings, publishable, loads } = state.lint;
  const errors = findings.filter((f) => f.severity === "error").length;
  const warnings = findings.length - errors;
  const badge = $("#lintState");
  badge.textContent = publishable
    ? (warnings ? `可以提交（${warnings} 条提醒）` : "未发现问题")
    : loads ? `${errors} 个错误` : "格式有误";
  badge.className = `lint-state ${publishable ? "ok" : "bad"}`;
  const list = $("#lint");
  list.replaceChildren();
  for (const f of findings) {
    const li = el("li", { className: f.severity },
      el("span", { className: "sev", textContent: f.severity === "error" ? "错误" : "提醒" }),
      ` ${f.line ? `第 ${f.line} 行` : ""}${f.step_id ? ` · 步骤 ${f.step_id}` : ""}：`,
      el("span", { className: "text", textContent: f.message }));
    li.dataset.code = f.code;
    if (f.line) li.onclick = () => goToLine(f.line);
    list.append(li);
  }
}

function goToLine(line) {
  const lines = editor.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  editor.focus();
  editor.setSelectionRange(start, start + (lines[line - 1] || "").length);
  editor.scrollTop = Math.max(0, offsetOf(start) - editor.clientHeight / 3);
}

// Where a character sits in the (wrapping) textarea: the same text laid out in a hidden copy.
function offsetOf(position) {
  const style = getComputedStyle(editor);
  const mirror = document.createElement("div");
  for (const key of ["fontFamily", "fontSize", "lineHeight", "paddingTop", "paddingLeft",
    "paddingRight", "borderTopWidth", "borderLeftWidth", "borderRightWidth", "tabSize",
    "letterSpacing", "boxSizing"]) mirror.style[key] = style[key];
  Object.assign(mirror.style, { position: "absolute", visibility: "hidden", top: "0", left: "0",
    whiteSpace: "pre-wrap", overflowWrap: "break-word", width: `${editor.offsetWidth}px` });
  mirror.textContent = editor.value.slice(0, position);
  const marker = document.createElement("span");
  marker.textContent = "\u200b";
  mirror.append(marker);
  document.body.append(mirror);
  const top = marker.offsetTop;
  mirror.remove();
  return top;
}

// --- save, review, publish -------------------------------------------------------------------

async function save() {
  const v = selected();
  const number = nextNumber(v.product_id);
  // The first `version:` under `script:` is the script's own number.
  let text = editor.value;
  const script = text.search(/^script:\s*$/m);
  if (script >= 0) {
    const head = text.slice(0, script);
    text = head + text.slice(script).replace(/^(\s+version:\s*)\d+/m, `$1${number}`);
  }
  $("#save").disabled = true;
  try {
    const created = await call("POST", "/scripts", { yaml: text, source_name: `v${number}.yaml` });
    state.dirty = false;
    setStatus(message, `已保存为第 ${created.version} 版草稿`, "ok");
    await loadVersions();
    await openVersion(created.id);
    setStatus(message, `已保存为第 ${created.version} 版草稿`, "ok");
  } catch (err) {
    fail(err);
    $("#save").disabled = false;
  }
}

function renderReview() {
  const v = selected();
  const facts = $("#facts");
  facts.replaceChildren();
  const rows = [["状态", STATUS[v.status] || v.status], ["编写", person(v.created_by)],
    ["提交", person(v.submitted_by)], ["审核", person(v.approved_by)],
    ["创建时间", when(v.created_at)], ["发布时间", when(v.published_at)],
    ["内容哈希", `${v.content_hash.slice(0, 19)}…`]];
  for (const [k, value] of rows) facts.append(el("dt", { textContent: k }), el("dd", { textContent: value }));
  facts.dataset.status = v.status;
  const author = [v.created_by, v.submitted_by].includes(me().id);
  const canPublish = me().permissions.includes("publish_script");
  $("#submit").classList.toggle("hidden", v.status !== "draft");
  $("#approve").classList.toggle("hidden", v.status !== "submitted");
  $("#approve").disabled = author || !canPublish;
  $("#publish").classList.toggle("hidden", v.status !== "approved");
  $("#publish").disabled = !canPublish;
  const hints = {
    draft: "草稿须通过合规检查后才能提交审核。",
    submitted: author ? "您是该版本的编写人或提交人：须由另一位产品负责人审核（四眼原则）。"
      : "请核对内容与差异后审核。",
    approved: "发布后立即生效，新建的录制会话将使用此版本；原已发布版本自动停用。",
    published: "该版本正在使用中。修改请另存为新草稿。",
    retired: "该版本已停用。",
  };
  $("#reviewHint").textContent = hints[v.status] || "";
  setStatus($("#reviewStatus"), "");
}

async function transition(action, done) {
  const v = selected();
  try {
    await call("POST", `/scripts/${v.id}/${action}`);
    await loadVersions();
    state.dirty = false;
    await openVersion(v.id);
    setStatus($("#reviewStatus"), done, "ok");
  } catch (err) {
    const findings = /** @type {{ message: string }[] | undefined} */ (
      err instanceof ApiError && err.body ? err.body.findings : undefined);
    const extra = findings && findings.length ? `（${findings[0].message}）` : "";
    setStatus($("#reviewStatus"), `${err instanceof Error ? err.message : String(err)}${extra}`, "error");
  }
}

// --- speech ----------------------------------------------------------------------------------

async function loadSteps(v) {
  const list = $("#steps");
  list.replaceChildren();
  let result;
  try {
    result = await call("POST", "/scripts/lint", { yaml: v.yaml, source_name: "stored.yaml" });
  } catch (err) { fail(err); return; }
  for (const step of result.steps) {
    const li = el("li", {}, el("span", { textContent: `${step.title}（${step.id}）` }));
    li.dataset.step = step.id;
    if (step.speaker === "tts") {
      const play = el("button", { className: "small quiet", textContent: "试听" });
      play.onclick = () => hear(v.id, step.id, play);
      li.append(play);
    } else {
      li.append(el("span", { className: "muted", textContent: "销售人员宣读" }));
    }
    list.append(li);
  }
}

async function hear(versionId, stepId, button) {
  button.disabled = true;
  button.textContent = "生成中…";
  try {
    const response = await fetch(`/api/v1/scripts/${versionId}/steps/${encodeURIComponent(stepId)}/speech`,
      { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new ApiError(response.status, body);
    }
    const player = $("#player");
    if (player.src) URL.revokeObjectURL(player.src);
    player.src = URL.createObjectURL(await response.blob());
    player.dataset.step = stepId;
    player.classList.remove("hidden");
    await player.play().catch(() => {});
  } catch (err) { fail(err); } finally {
    button.disabled = false;
    button.textContent = "试听";
  }
}

$("#save").onclick = save;
$("#submit").onclick = () => transition("submit", "已提交审核，请另一位产品负责人审核");
$("#approve").onclick = () => transition("approve", "已审核通过，可以发布");
$("#publish").onclick = () => transition("publish", "已发布，语音正在后台预生成");
$("#logout").onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.href = location.pathname;
};
staffLoginForm(TOKEN_KEY, async (t) => { token = t; clear(); await start(); }, fail);
start();
