// @ts-check
// The customer's H5 flow: open the invitation → consent (R-10) → identity (R-12) → wait →
// the call with captions and answer buttons (R-24) → hand-copy and sign (R-25) → done.
// The page follows the session state pushed over the live socket, so a reload or a dropped
// network puts the customer back exactly where the session is.
import { $, ApiError, api, live, setStatus, show, uuid } from "/static/api.js";
import { CopyGrid, SignaturePad, combine } from "/static/signature.js";
import { Call, showBusy } from "/static/call.js";
import { showLiveCheck } from "/static/live-check.js";
import { reportNetwork } from "/static/network.js";

const TOKEN_KEY = "shuanglu.customer_token";
const ENDED = {
  declined: ["您已拒绝远程双录", "本次投保无法通过远程方式继续办理，如需投保请前往营业网点。"],
  identity_failed: ["身份核验未通过", "多次核验未通过，本次远程双录已结束，请联系销售人员。"],
  expired: ["本次录制已过期", "请联系销售人员重新发起。"],
  aborted: ["本次录制已终止", "如有疑问请联系销售人员。"],
};
const DONE = new Set(["completed", "sealed", "qa_pending", "qa_passed", "qa_rejected"]);
const CALL = new Set(["in_call", "disclosing", "signing", "interrupted"]);
const WRITTEN = new Set(["handwritten_copy", "signature"]);
let riskSentence = "";
let writingFor = null; // the step (or "final") the pads are showing; re-renders keep the ink
let call = null;
let stopNetwork = null; // the connection reports of the call (network.js)
let speaking = null; // the clip being played into the call, while it plays
let shownStep = null; // the step the call page last brought into view
let listeningNow = false; // the current step is still being read out

// The call starts when the agent starts it; the page joins by itself and stays joined. The
// camera and microphone are opened here first (device help on a refusal, R-30), then handed to
// the call.
let joining = false;
async function joinCall() {
  if (call || joining || deviceStage === "call") return; // refused: the customer retries
  joining = true;
  const media = await openDevices("call");
  joining = false;
  if (!media || call) { if (media && call) media.getTracks().forEach((t) => t.stop()); return; }
  $("#selfVideo").srcObject = media;
  call = new Call({
    offerPath: `/calls/${session.id}/customer/offer`, token,
    remoteVideo: $("#remoteVideo"), selfVideo: $("#selfVideo"),
    onMessage: (m) => {
      if (m.type === "tts_started") speaking = m.clip_id;
      if (m.type === "tts_finished" && speaking === m.clip_id) speaking = null;
      if (m.type.startsWith("liveness_")) showLiveCheck(m); // the live check (R-12, issue 15)
      if (session) renderCall(session);
    },
    onState: (state) => { $("#net").textContent = state === "connected" ? "" : "视频连接中…"; },
    onBusy: showBusy(message, setStatus),
  });
  call.media = media; // call.js opens its own only when none was given
  call.start().catch((err) => { call = null; fail(err); });
  if (!stopNetwork) {
    stopNetwork = reportNetwork(() => (call ? call.pc : null), () => token, (hint) => {
      $("#netHint").textContent = hint ? `⚠ ${hint}` : "";
      $("#netHint").classList.toggle("hidden", !hint);
    });
  }
}

// The customer's login survives a closed WeChat page: kept in localStorage for this session,
// until the token's own expiry, so a reopened tab in the same WebView goes on (issue 17). The
// tab's sessionStorage copy stays for the tests and older pages that read it.
const STORE_KEY = "shuanglu.customer";
function saveToken(t, expiresIn, sessionId) {
  token = t;
  sessionStorage.setItem(TOKEN_KEY, t);
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify({
      token: t, session: sessionId, until: Date.now() + (expiresIn || 3600) * 1000 }));
  } catch (err) { /* storage disabled: this tab only */ }
}
function storedToken() {
  const inTab = sessionStorage.getItem(TOKEN_KEY);
  if (inTab) return inTab;
  try {
    const kept = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
    if (kept && kept.until > Date.now()) return kept.token;
    localStorage.removeItem(STORE_KEY);
  } catch (err) { /* unreadable: nothing kept */ }
  return null;
}
function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  try { localStorage.removeItem(STORE_KEY); } catch (err) { /* nothing kept */ }
  token = null;
}

let token = storedToken();
let session = null;
let consentTexts = null;
let pads = null;
const message = $("#message");

function fail(err) {
  setStatus(message, err instanceof ApiError ? err.message : String(err), "error");
  message.scrollIntoView({ block: "nearest" }); // seen wherever the customer has scrolled to
}

// The three ways in: a plain link, a WeChat link (the customer's openid must be the one the
// invitation is bound to; WeChat's web authorisation adds `code`), a signed bank-app deep link.
async function redeem() {
  const path = location.pathname;
  const q = new URLSearchParams(location.search);
  const plain = path.match(/^\/h5\/invite\/([A-Za-z0-9_-]+)$/);
  if (plain) return api("POST", "/invitations/open", { body: { token: plain[1] } });
  const wx = path.match(/^\/h5\/wx\/([A-Za-z0-9_-]+)$/);
  if (wx && q.get("code")) {
    return api("POST", "/wechat/invitations/open", { body: { ref: wx[1], code: q.get("code") } });
  }
  if (wx) {
    const target = await api("GET", `/wechat/oauth-url?ref=${encodeURIComponent(wx[1])}`);
    location.href = target.url;
    return null;
  }
  const bank = path.match(/^\/h5\/bank\/([A-Za-z0-9_-]+)$/);
  if (bank) {
    return api("POST", "/bank/invitations/open", { body: {
      ref: bank[1], cu: q.get("cu"), exp: Number(q.get("exp")), n: q.get("n"), sig: q.get("sig") } });
  }
  throw new Error("链接无效，请使用销售人员发送的链接打开。");
}

async function openInvitation() {
  try {
    const result = await redeem();
    if (!result) return;
    saveToken(result.customer_token, result.expires_in, result.session.id);
    history.replaceState(null, "", "/h5/session"); // the link is single-use: drop it from view
    follow();
    render(result.session);
    if (!introShown) loadIntroduction();
  } catch (err) {
    if (err instanceof ApiError && err.code === "invitation_used") showResume(err.message);
    else fail(err);
  }
}

async function loadConsents() {
  if (consentTexts) return;
  consentTexts = (await api("GET", "/consent-texts")).texts;
  const box = $("#consents");
  box.replaceChildren(...consentTexts.map((t) => {
    const wrap = document.createElement("div");
    const title = document.createElement("h2");
    title.textContent = t.title;
    const text = document.createElement("div");
    text.className = "consent-text";
    text.textContent = t.text;
    // R-10: each consent is its own explicit act, not one click for both.
    const label = document.createElement("label");
    label.className = "check";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.dataset.kind = t.kind;
    box.onchange = updateAgree;
    label.append(box, `我已阅读并同意《${t.title}》`);
    wrap.append(title, text, label);
    return wrap;
  }));
  updateAgree();
}

function updateAgree() {
  const boxes = /** @type {HTMLInputElement[]} */ (
    [...document.querySelectorAll("#consents input[type=checkbox]")]);
  $("#agree").disabled = !boxes.length || boxes.some((b) => !b.checked);
}

async function consent(agreed) {
  try {
    const answers = consentTexts.map((t) => ({ kind: t.kind, text_hash: t.sha256, agreed }));
    render(await api("POST", "/customer/consent", { token, body: { answers } }));
  } catch (err) { fail(err); }
}

function renderCall(s) {
  stage("call");
  if (s.state !== "interrupted") joinCall();
  const step = s.current_step;
  $("#stepCounter").textContent = s.step_count ? `第 ${Math.min(s.steps_done + 1, s.step_count)} / ${s.step_count} 项` : "";
  $("#stepBar").style.width = `${s.step_count ? (100 * s.steps_done) / s.step_count : 0}%`;
  $("#paused").classList.toggle("hidden", !s.paused);
  // A spot check of liveness holds the script (issue 15): not a pause for the agent to explain.
  $("#paused").textContent = s.liveness_check
    ? "随机活体抽检：请正对摄像头，按屏幕下方提示完成动作，通过后自动继续。"
    : "已通知销售人员为您解释，请稍候。";
  // R-25: the hand-copy and the signature are answered on pads, either as script steps or,
  // for a script without them, in the final signing state.
  // The pads appear once the server accepts the writing (after the step was heard, R-24).
  const written = s.state === "disclosing" && step && !s.paused && s.answer_open
    && WRITTEN.has(step.answer);
  const finalSigning = s.state === "signing" && !s.signed;
  const writing = written || finalSigning;
  $("#signing").classList.toggle("hidden", !writing);
  if (writing) {
    const copy = finalSigning || step.answer === "handwritten_copy";
    const sign = finalSigning || step.answer === "signature";
    $("#copyBlock").classList.toggle("hidden", !copy);
    $("#signBlock").classList.toggle("hidden", !sign);
    const copyText = (step && step.copy_text) || riskSentence;
    $("#riskSentence").textContent = copyText;
    if (!pads) {
      pads = { copy: new CopyGrid($("#copyGrid")), sign: new SignaturePad($("#signPad")) };
      pads.copy.onchange = updateCopyCount;
    }
    const target = finalSigning ? "final" : step.id;
    if (writingFor !== target) {
      writingFor = target;
      $("#copyBlock").classList.toggle("hidden", !copy); // laid out before the boxes are sized
      if (copy) pads.copy.build(copyText);
      pads.sign.resize();
    }
    pads.need = { copy, sign };
    updateCopyCount();
  }
  if (s.state === "signing" && s.signed) {
    $("#caption").textContent = "签名已提交，请等待销售人员完成录制。";
  } else if (finalSigning) {
    $("#caption").textContent = "讲解已全部完成，请在下方抄录风险提示语句并签名。";
  } else if (s.state === "interrupted") {
    $("#caption").textContent = "通话已中断，正在等待重新连接……请保持本页面打开，销售人员恢复后会自动继续。";
  } else if (step) {
    $("#caption").textContent = step.text;
  }
  renderDocument(s, step);
  // The server says when it accepts the answer (after the step was heard in full, R-24).
  const answerable = step && s.state === "disclosing" && !s.paused && s.answer_open
    && step.answer !== "none" && !WRITTEN.has(step.answer);
  // A spoken answer is listened for; the buttons come when the server offers them (after
  // answers it could not understand, or silence).
  const spoken = answerable && step.answer === "spoken_answer" ? s.spoken : null;
  $("#speak").classList.toggle("hidden", !spoken);
  if (spoken) renderSpoken(step, spoken);
  $("#answers").classList.toggle("hidden", !answerable || Boolean(spoken && !spoken.buttons));
  // A new step: bring its answers (or the pads, below the video) into view, once per step so
  // the page never fights the customer's own scrolling.
  const shown = step ? `${s.state}:${step.id}` : s.state;
  if (shown !== shownStep) {
    shownStep = shown;
    if (writing) $("#signing").scrollIntoView({ block: "start" });
    else $("#caption").closest(".card").scrollIntoView({ block: "nearest" });
  }
  // While the step is being read out, the customer listens first (R-24).
  const listening = Boolean(s.speaking || (speaking && step && speaking.startsWith(`${step.id}@`))
    || (step && s.state === "disclosing" && !s.paused && !s.answer_open && step.answer !== "none"));
  listeningNow = listening;
  $("#yes").disabled = $("#no").disabled = listening;
  $("#listening").classList.toggle("hidden", !listening);
  $("#yes").textContent = yesLabel(step);
  renderDock(s, step, answerable, spoken, listening);
  tickDocument();
}

// What the step asks the customer to say (请回答“…”), and what the server heard.
function renderSpoken(step, spoken) {
  const asked = /请(?:您)?回答[“"「]([^”"」]{1,8})[”"」]/.exec(step.text);
  $("#speakWords").textContent = asked ? asked[1] : "清楚";
  const heard = $("#heard");
  const said = spoken.heard ? `“${spoken.heard}”` : "";
  if (spoken.verdict === "unclear") {
    heard.textContent = spoken.buttons
      ? `没有听清${said ? `（听到：${said}）` : ""}，请点击下方按钮回答`
      : `没有听清${said ? `（听到：${said}）` : ""}，请再说一遍`;
  } else if (said) {
    heard.textContent = `听到：${said}`;
  } else {
    heard.textContent = spoken.buttons ? "也可以点击下方按钮回答" : "";
  }
  heard.classList.toggle("hidden", !heard.textContent);
}

// ---- documents (R-25): the pinned pages, one at a time, every view reported to the server,
// which times it by its own clock; confirming waits until each page was shown long enough.
let doc = null; // {stepId, pages, page, minMs, shown: {page: ms before this view}, since}
const pageUrls = new Map();

function renderDocument(s, step) {
  const pinned = step && s.state === "disclosing" ? step.document_pages : null;
  $("#document").classList.toggle("hidden", !(step && step.document && s.state === "disclosing"));
  if (step && step.document) $("#documentName").textContent = step.document;
  const stepId = pinned ? step.id : null;
  if (doc && doc.stepId !== stepId) { reportView(doc.stepId, 0); doc = null; }
  for (const id of ["#docFrame", "#docPage", "#docTimer", "#docZoom"]) $(id).classList.toggle("hidden", !pinned);
  $("#docPrev").parentElement.classList.toggle("hidden", !pinned);
  if (pinned && !doc) {
    doc = { stepId, pages: pinned.pages, page: 0, minMs: pinned.min_page_seconds * 1000, shown: {}, since: 0 };
    $("#docTimer").textContent = "";
    $("#docFrame").scrollTop = 0;
    showPage(1);
  }
}

async function pageUrl(sha) {
  if (!pageUrls.has(sha)) {
    const response = await fetch(`/api/v1/customer/documents/pages/${sha}`, {
      headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) throw new Error("文件页面加载失败，请稍后重试");
    pageUrls.set(sha, URL.createObjectURL(await response.blob()));
  }
  return pageUrls.get(sha);
}

async function reportView(stepId, page) {
  try {
    return await api("POST", "/customer/documents/views", { token, body: { step_id: stepId, page } });
  } catch (err) { console.warn("page view not recorded", page, err); return null; } // read a little longer
}

async function showPage(n) {
  if (!doc) return;
  const current = doc;
  const total = current.pages.length;
  if (current.page && current.since) { // the time on the page being left, until the server says
    current.shown[current.page] = shownMs(current.page);
  }
  current.page = n;
  current.since = 0; // this page's time starts when the server has recorded its view
  $("#docTimer").textContent = `正在打开第 ${n} 页……`;
  $("#docTimer").classList.remove("ok");
  $("#docPage").textContent = `第 ${n} / ${total} 页`;
  $("#docPrev").disabled = n <= 1;
  $("#docNext").disabled = n >= total;
  $("#docImage").alt = `${$("#documentName").textContent} 第 ${n} 页`;
  try { $("#docImage").src = await pageUrl(current.pages[n - 1].sha256); } catch (err) { fail(err); }
  const result = await reportView(current.stepId, n);
  if (doc !== current || current.page !== n) return;
  if (result) for (const p of result.pages) current.shown[p.page] = p.shown_ms;
  current.since = performance.now();
  tickDocument();
}

function shownMs(page) {
  if (!doc) return 0;
  const open = page === doc.page && doc.since ? performance.now() - doc.since : 0;
  return (doc.shown[page] || 0) + open;
}

function tickDocument() {
  if (!doc || !doc.since) return;
  const left = Math.ceil(Math.max(0, doc.minMs - shownMs(doc.page)) / 1000);
  const unread = doc.pages.map((_, i) => i + 1).filter((p) => shownMs(p) < doc.minMs);
  const timer = $("#docTimer");
  if (left > 0) timer.textContent = `本页请至少阅读 ${left} 秒`;
  else if (unread.length) timer.textContent = `本页已读 ✔　还需阅读：第 ${unread.join("、")} 页`;
  else timer.textContent = "全部页面已阅读 ✔ 可以点击下方按钮确认";
  timer.classList.toggle("ok", left === 0);
  // Confirming a document waits for every page (the server checks it again by its clock).
  $("#yes").disabled = Boolean(unread.length) || listeningNow;
}

setInterval(tickDocument, 500);
document.addEventListener("visibilitychange", () => {
  if (!doc) return;
  if (document.hidden) { reportView(doc.stepId, 0); doc.since = 0; } else showPage(doc.page);
});

// A refusal is shown next to the 确认提交 button, where the customer is writing.
function signError(text) {
  const box = $("#signError");
  box.textContent = text;
  box.classList.toggle("hidden", !text);
  if (text) box.scrollIntoView({ block: "center" });
}

function updateCopyCount() {
  if (!pads || !pads.copy.boxes.length) return;
  $("#copyCount").textContent = `已写 ${pads.copy.filled} / ${pads.copy.boxes.length} 个字`;
}

function render(s) {
  session = s;
  setStatus(message, "");
  if (s.state === "opened") { stage("consent"); loadConsents().catch(fail); return; }
  if (s.state === "consented") { stage("identity"); loadIdentity().catch(fail); return; }
  if (s.state === "identity_verified") { stage("waiting"); return; }
  if (CALL.has(s.state)) { renderCall(s); return; }
  if (DONE.has(s.state)) {
    if (call) { call.close(); call = null; }
    if (stopNetwork) { stopNetwork(); stopNetwork = null; }
    stage("done"); return;
  }
  const ended = ENDED[s.state];
  if (ended) { $("#doneTitle").textContent = ended[0]; $("#doneText").textContent = ended[1]; stage("done"); }
}

// ---- identity (R-12): both sides of the ID card, then a clip of the random challenges.
let identityInfo = null;
let uploaded = new Set();
let recording = false;

function identityStatus(text, kind = "") {
  const box = $("#identityResult");
  setStatus(box, text, kind);
  if (text) box.scrollIntoView({ block: "center" }); // the customer is at the bottom of the page
}

function showUploaded(id, done) {
  const state = $(id);
  state.textContent = done ? "✔ 已上传，点这里可重拍" : "点这里拍照或选择照片";
  state.classList.toggle("done", done);
}

function lockIdentity(locked) {
  for (const id of ["#idFront", "#idBack", "#recordLiveness"]) $(id).disabled = locked;
  $("#verify").disabled = locked || uploaded.size < 3;
}

async function loadIdentity() {
  identityInfo = await api("GET", "/customer/identity", { token });
  uploaded = new Set(identityInfo.uploads);
  $("#challengeList").textContent = identityInfo.challenges.map((c) => c.prompt).join("，");
  const last = identityInfo.last_check;
  if (identityInfo.pending) identityStatus("正在核验，请稍候……");
  else if (last && !last.passed) {
    identityStatus(`第 ${last.attempt} 次核验未通过：${last.reasons.join("；") || "请重新拍摄"}。` +
      `还可以尝试 ${identityInfo.attempts_left} 次。`, "error");
  } else setStatus($("#identityResult"), "");
  showUploaded("#doneFront", uploaded.has("id_front"));
  showUploaded("#doneBack", uploaded.has("id_back"));
  const clip = $("#livenessState");
  clip.textContent = uploaded.has("liveness") ? "✔ 动作视频已上传" : "";
  clip.classList.toggle("done", uploaded.has("liveness"));
  clip.classList.toggle("hidden", !uploaded.has("liveness"));
  $("#recordLiveness").textContent = uploaded.has("liveness") ? "重新录制动作视频" : "开始录制动作视频";
  if (!recording) lockIdentity(identityInfo.pending);
}

async function upload(kind, blob) {
  const response = await fetch(`/api/v1/customer/identity/uploads/${kind}`, {
    method: "POST", body: blob,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": blob.type || "image/jpeg" },
  });
  const body = await response.json();
  if (!response.ok) throw new ApiError(response.status, body);
  await loadIdentity();
}

async function uploadPhoto(kind, input, stateId, previewId) {
  const file = input.files[0];
  if (!file) return;
  const state = $(stateId);
  state.textContent = "正在上传……";
  state.classList.remove("done");
  try {
    await upload(kind, file);
    const preview = $(previewId);
    preview.src = URL.createObjectURL(file);
    preview.classList.remove("hidden");
  } catch (err) {
    showUploaded(stateId, uploaded.has(kind));
    fail(err);
  } finally { input.value = ""; } // choosing the same photo again still uploads it
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

// One prompt on top of the camera preview, with a bar running down its time.
async function prompting(text, note, ms) {
  $("#challenge").replaceChildren(text, Object.assign(document.createElement("small"), { textContent: note }));
  const bar = $("#challengeBar");
  bar.style.transition = "none";
  bar.style.width = "100%";
  bar.getBoundingClientRect(); // restart the transition from full
  bar.style.transition = `width ${ms}ms linear`;
  bar.style.width = "0";
  await sleep(ms);
}

async function recordLiveness() {
  if (recording) return;
  const stream = await openDevices("liveness");
  if (!stream) return;
  recording = true;
  lockIdentity(true);
  $("#livenessState").classList.add("hidden");
  const box = $("#livenessBox");
  box.classList.remove("hidden");
  box.scrollIntoView({ block: "center" });
  $("#livenessVideo").srcObject = stream;
  const type = MediaRecorder.isTypeSupported("video/webm") ? "video/webm" : "video/mp4";
  const recorder = new MediaRecorder(stream, { mimeType: type });
  const chunks = [];
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start(250);
  await prompting("请正对摄像头", "保持整张脸在画面中", 1500);
  // Each action has its own time limit on the server; the prompts pace the customer within it.
  const each = Math.min(identityInfo.time_limit_s, 4) * 1000;
  const total = identityInfo.challenges.length;
  for (const [i, c] of identityInfo.challenges.entries()) {
    await prompting(c.prompt, `第 ${i + 1} 个动作，共 ${total} 个`, each);
  }
  $("#challenge").textContent = "录制完成，正在上传……";
  recorder.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  try {
    await upload("liveness", new Blob(chunks, { type }));
  } catch (err) { fail(err); } finally {
    box.classList.add("hidden");
    recording = false;
    await loadIdentity().catch(fail);
    $("#livenessState").scrollIntoView({ block: "center" });
  }
}

async function submitIdentity() {
  try {
    lockIdentity(true);
    await api("POST", "/customer/identity/submit", { token });
    identityStatus("正在核验，请稍候……");
  } catch (err) { fail(err); await loadIdentity(); }
}

async function answer(value) {
  const step = session && session.current_step;
  if (!step) return;
  $("#yes").disabled = $("#no").disabled = true;
  try {
    const body = { step_id: step.id, answer: value, answer_kind: "button", client_event_id: uuid() };
    const result = await api("POST", "/customer/acknowledgements", { token, body });
    render(result.session); // shown only once the server has stored the answer
  } catch (err) { fail(err); } finally { $("#yes").disabled = $("#no").disabled = false; }
}

// R-25: the strokes and the picture, never the text; the server reads the handwriting.
async function submitSignature() {
  const { copy, sign } = pads.need;
  if (copy && !pads.copy.complete) {
    const missing = pads.copy.boxes.map((b, i) => (b.ink.empty ? i + 1 : 0)).filter(Boolean);
    signError(`还有 ${missing.length} 个字格没有写：第 ${missing.slice(0, 10).join("、")} 格。`);
    return;
  }
  if (sign && pads.sign.empty) { signError("请先在签名区签名。"); return; }
  signError("");
  const canvases = [copy && pads.copy.canvas(1.5), sign && pads.sign.canvas].filter(Boolean);
  const button = $("#submitSignature");
  button.disabled = true;
  button.textContent = "正在识别，请稍候……";
  try {
    const body = { image_base64: combine(...canvases) };
    if (copy) body.copy_strokes = pads.copy.strokes();
    if (sign) body.signature_strokes = pads.sign.strokes();
    await api("POST", "/customer/signature", { token, body });
    pads.copy.clear(); pads.sign.clear(); writingFor = null;
    render(await api("GET", "/customer/session", { token }));
  } catch (err) {
    signError(err instanceof ApiError ? err.message : String(err));
    const boxes = /** @type {number[] | undefined} */ (err instanceof ApiError && err.body
      && err.body.wrong_boxes);
    if (copy && boxes && boxes.length) pads.copy.mark(boxes);
    if (err instanceof ApiError && err.code === "signature_not_handwritten") pads.sign.clear();
  } finally { button.disabled = false; button.textContent = "确认提交"; }
}

function follow() {
  if (following) return;
  following = true;
  live(() => ({ role: "customer", token }), (msg) => {
    if (msg.type === "snapshot") render(msg.session);
    if (msg.type === "error") { clearToken(); fail(new Error(msg.detail)); }
  }, (up) => { $("#net").textContent = up ? "" : "网络重连中…"; });
}

async function init() {
  api("GET", "/consent-texts").then((c) => { riskSentence = c.risk_sentence; });
  $("#start").onclick = openInvitation;
  $("#agree").onclick = () => consent(true);
  $("#decline").onclick = () => { if (confirm("拒绝后将无法通过远程方式投保，确定不同意吗？")) consent(false); };
  $("#yes").onclick = () => answer("affirmative");
  $("#no").onclick = () => answer("negative");
  $("#clearCopy").onclick = () => { pads.copy.clear(); updateCopyCount(); };
  $("#undoCopy").onclick = () => { pads.copy.undoLast(); updateCopyCount(); };
  $("#docPrev").onclick = () => doc && doc.page > 1 && showPage(doc.page - 1);
  $("#docNext").onclick = () => doc && doc.page < doc.pages.length && showPage(doc.page + 1);
  $("#docZoom").onclick = () => {
    const zoomed = $("#docFrame").classList.toggle("zoomed");
    $("#docZoom").textContent = zoomed ? "缩小" : "放大查看";
  };
  $("#clearSign").onclick = () => pads.sign.clear();
  $("#submitSignature").onclick = submitSignature;
  $("#idFront").onchange = (e) => uploadPhoto("id_front", e.target, "#doneFront", "#previewFront");
  $("#idBack").onchange = (e) => uploadPhoto("id_back", e.target, "#doneBack", "#previewBack");
  $("#recordLiveness").onclick = recordLiveness;
  $("#verify").onclick = submitIdentity;
  $("#replay").onclick = replay;
  $("#deviceRetry").onclick = retryDevices;
  $("#resumeGo").onclick = resume;
  $("#resumeCode").addEventListener("keydown", (e) => { if (e.key === "Enter") resume(); });
  $("#resumeCode").addEventListener("input", (e) => { e.target.value = e.target.value.replace(/\D/g, "").slice(0, 6); });
  await enter();
}

// The ways in (issue 17): a fresh link shows who the customer deals with, then 开始 uses it; a
// used link (the WeChat page was closed) goes on with the token this WebView kept, or asks for
// the agent's one-time code; /h5/resume and an expired /h5/session ask for the code too.
async function enter() {
  const plain = location.pathname.match(/^\/h5\/invite\/([A-Za-z0-9_-]+)$/);
  if (plain) {
    linkToken = plain[1];
    try {
      showIntro(await api("POST", "/invitations/preview", { body: { token: linkToken } }));
      stage("welcome");
      return;
    } catch (err) {
      if (!(err instanceof ApiError) || ![404, 410].includes(err.status)) { stage("welcome"); return; }
      if (err.code === "invitation_used") {
        if (await continueStored()) return;
        showResume(err.message);
        return;
      }
      fail(err);
      return;
    }
  }
  if (await continueStored()) return;
  if (/^\/h5\/(wx|bank)\//.test(location.pathname)) { stage("welcome"); return; }
  showResume(location.pathname === "/h5/resume" ? ""
    : "页面已失效。如需继续办理，请输入销售人员提供的验证码，或重新打开销售人员发送的链接");
}

async function continueStored() {
  const kept = storedToken();
  if (!kept) return false;
  token = kept;
  try {
    render(await api("GET", "/customer/session", { token }));
  } catch (err) { clearToken(); return false; }
  sessionStorage.setItem(TOKEN_KEY, kept);
  follow();
  return true;
}

let linkToken = null; // the invitation link the page was opened from (used: only with a code)
let following = false;
let introShown = false;

// Stages, with what belongs to them: the names on the first screens, the dock in the call.
function stage(id) {
  show(id);
  // The names sit under the heading of the first screens (welcome, consent, coming back).
  const intro = $("#intro");
  const named = introShown && ["welcome", "consent", "resume"].includes(id);
  intro.classList.toggle("hidden", !named);
  if (named) $(`[data-stage="${id}"] h1`).after(intro);
  if (id !== "call") { $("#dock").classList.add("hidden"); document.body.classList.remove("docked"); }
}

function showIntro(intro) {
  $("#introInsurer").textContent = intro.insurer;
  $("#introProduct").textContent = intro.product;
  $("#introAgent").textContent = intro.agent;
  $("#introLicence").textContent = intro.agent_licence_no;
  const tel = $("#introHotline");
  tel.textContent = intro.hotline || "请咨询销售人员";
  tel.href = intro.hotline ? `tel:${intro.hotline.replace(/[^0-9+]/g, "")}` : "#";
  $("#deviceHotline").textContent = intro.hotline ? `仍无法开启？请拨打客服电话 ${intro.hotline}，或联系您的销售人员。` : "";
  introShown = true;
  const current = $("[data-stage]:not(.hidden)");
  if (current) stage(current.dataset.stage);
}

async function loadIntroduction() {
  try { showIntro(await api("GET", "/customer/introduction", { token })); } catch (err) { /* names are a courtesy */ }
}

function showResume(why) {
  if (why) $("#resumeWhy").replaceChildren(`${why}。`, document.createElement("br"),
    "如果刚才的页面被关闭了，请向销售人员索取 6 位验证码，输入后即可回到刚才的进度继续办理。");
  setStatus(message, "");
  stage("resume");
  $("#resumeCode").focus();
}

async function resume() {
  const code = $("#resumeCode").value.trim();
  const box = $("#resumeError");
  if (!/^[0-9]{6}$/.test(code)) { setStatus(box, "请输入销售人员告诉您的 6 位数字验证码", "error"); return; }
  $("#resumeGo").disabled = true;
  try {
    const body = linkToken ? { code, token: linkToken } : { code };
    const result = await api("POST", "/invitations/resume", { body });
    setStatus(box, "");
    saveToken(result.customer_token, result.expires_in, result.session.id);
    history.replaceState(null, "", "/h5/session");
    follow();
    render(result.session);
  } catch (err) {
    setStatus(box, err instanceof ApiError ? err.message : String(err), "error");
  } finally { $("#resumeGo").disabled = false; }
}

// ---- camera and microphone (issue 17 item 2, R-30): opened by the page, a refusal explained
// for the browser the customer is in (WeChat, a bank app, a plain browser), the agent told, and
// a retry that needs no reload.
const UA = navigator.userAgent;
const IN_WECHAT = /MicroMessenger/i.test(UA);
const IOS = /iPhone|iPad|iPod/i.test(UA);
let deviceStage = null; // what the retry resumes: "call" or "liveness"
let deviceReported = "";

function deviceState(err) {
  const name = (err && err.name) || "";
  if (["NotAllowedError", "SecurityError", "PermissionDeniedError"].includes(name)) return "denied";
  if (["NotFoundError", "OverconstrainedError", "DevicesNotFoundError"].includes(name)) return "missing";
  if (["NotReadableError", "TrackStartError", "AbortError"].includes(name)) return "busy";
  return "error";
}

async function permission(name) {
  try { return (await navigator.permissions.query({ name })).state; } catch (err) { return "unknown"; }
}

function guidance(state, what) {
  if (state === "missing") {
    return [`没有找到可用的${what}。请使用带前置摄像头和麦克风的手机打开本页面。`,
      "如果插着耳机或外接设备，请拔下后重试。"];
  }
  if (state === "busy") {
    return [`${what}正被其他应用占用（例如正在进行的视频通话、相机或录音）。`,
      "请关闭这些应用，回到本页面后点击“重试”。"];
  }
  if (IN_WECHAT && IOS) {
    return ["点击屏幕右上角的“…”，选择“设置”，允许使用摄像头和麦克风；",
      "如果没有该选项：打开手机“设置”→ 向下找到“微信”→ 打开“相机”和“麦克风”开关；",
      "回到本页面，点击下方“我已开启，重试”。"];
  }
  if (IN_WECHAT) {
    return ["点击屏幕右上角的“…”，选择“设置”，允许使用摄像头和麦克风；",
      "如果仍不行：打开手机“设置”→“应用”→“微信”→“权限”，把“相机”和“麦克风”设为“允许”；",
      "回到本页面，点击下方“我已开启，重试”。"];
  }
  if (IOS) {
    return ["打开手机“设置”，找到您正在使用的 App（如银行 App 或浏览器），打开“相机”和“麦克风”开关；",
      "回到本页面，点击下方“我已开启，重试”；弹出授权提示时请点“允许”。"];
  }
  return ["打开手机“设置”→“应用”，找到您正在使用的 App（如银行 App 或浏览器）→“权限”，把“相机”和“麦克风”设为“允许”；",
    "在浏览器中也可以点击地址栏左侧的图标 →“网站设置”，允许摄像头和麦克风；",
    "回到本页面，点击下方“我已开启，重试”；弹出授权提示时请点“允许”。"];
}

async function reportDevices(camera, microphone, where, error = "") {
  const key = `${camera}/${microphone}/${where}`;
  if (key === deviceReported || !token) return;
  deviceReported = key;
  try {
    await api("POST", "/customer/devices", { token, body: { camera, microphone, stage: where, error: error.slice(0, 100) } });
  } catch (err) { deviceReported = ""; }
}

async function showDeviceHelp(err, where) {
  const state = deviceState(err);
  const needsMic = where === "call";
  let camera = state; let microphone = needsMic ? state : "unused";
  if (state === "denied") { // which of the two was refused, where the browser can tell
    const [cam, mic] = [await permission("camera"), needsMic ? await permission("microphone") : "granted"];
    if (cam === "granted" && mic === "denied") camera = "ok";
    if (mic === "granted" && cam === "denied") microphone = needsMic ? "ok" : "unused";
  }
  const what = [camera !== "ok" && "摄像头", needsMic && microphone !== "ok" && "麦克风"].filter(Boolean).join("和") || "摄像头";
  $("#deviceTitle").textContent = state === "denied" ? `请允许使用${what}` : `无法打开${what}`;
  $("#deviceWhat").textContent = what;
  $("#deviceWhy").classList.toggle("hidden", state !== "denied");
  $("#deviceWechatPicture").classList.toggle("hidden", !(IN_WECHAT && state === "denied"));
  $("#deviceSteps").replaceChildren(...guidance(state, what).map((text) => {
    const li = document.createElement("li"); li.textContent = text; return li;
  }));
  deviceStage = where;
  const help = $("#deviceHelp");
  help.classList.remove("hidden");
  help.scrollIntoView({ block: "start" });
  await reportDevices(camera, microphone, where, `${(err && err.name) || ""}: ${(err && err.message) || ""}`);
}

function hideDeviceHelp() { $("#deviceHelp").classList.add("hidden"); deviceStage = null; }

// The camera (and, for the call, the microphone) or null after showing the help.
async function openDevices(where) {
  try {
    const media = await navigator.mediaDevices.getUserMedia(where === "call"
      ? { audio: true, video: { width: 640, height: 480, frameRate: 15 } }
      : { video: { facingMode: "user" }, audio: false });
    hideDeviceHelp();
    if (deviceReported) await reportDevices("ok", where === "call" ? "ok" : "unused", where);
    return media;
  } catch (err) {
    await showDeviceHelp(err, where);
    return null;
  }
}

async function retryDevices() {
  const where = deviceStage;
  deviceStage = null;
  $("#deviceRetry").disabled = true;
  try {
    if (where === "call") await joinCall();
    else if (where === "liveness") await recordLiveness();
  } finally { $("#deviceRetry").disabled = false; }
}

// ---- 再听一遍 (R-23/R-24): the server plays the step again; its answer waits for the replay.
async function replay() {
  const step = session && session.current_step;
  if (!step) return;
  $("#replay").disabled = true;
  try {
    render(await api("POST", "/customer/replay", { token, body: { step_id: step.id } }));
  } catch (err) { fail(err); } finally { $("#replay").disabled = false; }
}

// What the step's text asks the customer to tap (请点击“确认”) names the button, so the two agree.
function yesLabel(step) {
  const asked = step && /请(?:您)?点击[“"「]([^”"」]{1,10})[”"」]/.exec(step.text);
  if (asked) return asked[1];
  return step && step.answer === "show_document" ? "我已看清，确认" : "是的，我已清楚";
}

function renderDock(s, step, answerable, spoken, listening) {
  const speakingNow = Boolean(s.speaking || (speaking && step && speaking.startsWith(`${step.id}@`)));
  // Writing on the pads takes the whole screen: no dock over the boxes then.
  const writing = !$("#signing").classList.contains("hidden");
  const replayable = Boolean(step && s.state === "disclosing" && !s.paused && step.speaker === "tts"
    && step.answer !== "none" && !speakingNow && !writing);
  $("#replay").classList.toggle("hidden", !replayable);
  const answers = !$("#answers").classList.contains("hidden");
  const docked = !writing && (answers || replayable || listening);
  $("#dock").classList.toggle("hidden", !docked);
  document.body.classList.toggle("docked", docked);
  const badge = $("#recBadge");
  badge.classList.toggle("hidden", !CALL.has(s.state));
  badge.classList.toggle("paused", s.state === "interrupted");
  $("#recText").textContent = s.state === "interrupted" ? "录制已暂停" : "录制中";
}

init();
