// The customer's H5 flow: open the invitation → consent → identity → wait →
// the call with captions and answer buttons → hand-copy and sign → done.
// The page follows the session state pushed over the live socket, so a reload or a dropped
// network puts the customer back exactly where the session is.
import { $, ApiError, api, live, setStatus, show, uuid } from "/static/api.js";
import { SignaturePad, combine } from "/static/signature.js";
import { Call } from "/static/call.js";

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
let speaking = null; // the clip being played into the call, while it plays
let shownStep = null; // the step the call page last brought into view

// The call starts when the agent starts it; the page joins by itself and stays joined.
function joinCall() {
  if (call) return;
  call = new Call({
    offerPath: "/customer/call/offer", token,
    remoteVideo: $("#remoteVideo"), selfVideo: $("#selfVideo"),
    onMessage: (m) => {
      if (m.type === "tts_started") speaking = m.clip_id;
      if (m.type === "tts_finished" && speaking === m.clip_id) speaking = null;
      if (session) renderCall(session);
    },
    onState: (state) => { $("#net").textContent = state === "connected" ? "" : "视频连接中…"; },
  });
  call.start().catch((err) => { call = null; fail(err); });
}

let token = sessionStorage.getItem(TOKEN_KEY);
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
    token = result.customer_token;
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", "/h5/session"); // the link is single-use: drop it from view
    follow();
    render(result.session);
  } catch (err) { fail(err); }
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
    // each consent is its own explicit act, not one click for both.
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
  const boxes = [...document.querySelectorAll("#consents input[type=checkbox]")];
  $("#agree").disabled = !boxes.length || boxes.some((b) => !b.checked);
}

async function consent(agreed) {
  try {
    const answers = consentTexts.map((t) => ({ kind: t.kind, text_hash: t.sha256, agreed }));
    render(await api("POST", "/customer/consent", { token, body: { answers } }));
  } catch (err) { fail(err); }
}

function renderCall(s) {
  show("call");
  if (s.state !== "interrupted") joinCall();
  const step = s.current_step;
  $("#stepCounter").textContent = s.step_count ? `第 ${Math.min(s.steps_done + 1, s.step_count)} / ${s.step_count} 项` : "";
  $("#stepBar").style.width = `${s.step_count ? (100 * s.steps_done) / s.step_count : 0}%`;
  $("#paused").classList.toggle("hidden", !s.paused);
  // the hand-copy and the signature are answered on pads, either as script steps or,
  // for a script without them, in the final signing state.
  const written = s.state === "disclosing" && step && !s.paused && WRITTEN.has(step.answer);
  const finalSigning = s.state === "signing" && !s.signed;
  const writing = written || finalSigning;
  $("#signing").classList.toggle("hidden", !writing);
  if (writing) {
    const copy = finalSigning || step.answer === "handwritten_copy";
    const sign = finalSigning || step.answer === "signature";
    $("#copyBlock").classList.toggle("hidden", !copy);
    $("#signBlock").classList.toggle("hidden", !sign);
    $("#riskSentence").textContent = (step && step.copy_text) || riskSentence;
    if (!pads) pads = { copy: new SignaturePad($("#copyPad")), sign: new SignaturePad($("#signPad")) };
    const target = finalSigning ? "final" : step.id;
    if (writingFor !== target) { pads.copy.resize(); pads.sign.resize(); writingFor = target; }
    pads.need = { copy, sign };
  }
  if (s.state === "signing" && s.signed) {
    $("#caption").textContent = "签名已提交，请等待销售人员完成录制。";
  } else if (finalSigning) {
    $("#caption").textContent = "讲解已全部完成，请在下方抄录风险提示语句并签名。";
  } else if (s.state === "interrupted") {
    $("#caption").textContent = "通话已中断，正在等待重新连接……";
  } else if (step) {
    $("#caption").textContent = step.text;
  }
  $("#document").classList.toggle("hidden", !(step && step.document && s.state === "disclosing"));
  if (step && step.document) $("#documentName").textContent = step.document;
  const answerable = step && s.state === "disclosing" && !s.paused && step.answer !== "none"
    && !WRITTEN.has(step.answer);
  $("#answers").classList.toggle("hidden", !answerable);
  // A new step: bring its answers (or the pads, below the video) into view, once per step so
  // the page never fights the customer's own scrolling.
  const shown = step ? `${s.state}:${step.id}` : s.state;
  if (shown !== shownStep) {
    shownStep = shown;
    if (writing) $("#signing").scrollIntoView({ block: "start" });
    else $("#caption").closest(".card").scrollIntoView({ block: "nearest" });
  }
  // While the step is being read out, the customer listens first.
  const listening = Boolean(s.speaking || (speaking && step && speaking.startsWith(`${step.id}@`)));
  $("#yes").disabled = $("#no").disabled = listening;
  $("#listening").classList.toggle("hidden", !listening);
  $("#yes").textContent = step && step.answer === "show_document" ? "我已看清，确认" : "是的，我已清楚";
}

function render(s) {
  session = s;
  setStatus(message, "");
  if (s.state === "opened") { show("consent"); loadConsents().catch(fail); return; }
  if (s.state === "consented") { show("identity"); loadIdentity().catch(fail); return; }
  if (s.state === "identity_verified") { show("waiting"); return; }
  if (CALL.has(s.state)) { renderCall(s); return; }
  if (DONE.has(s.state)) { if (call) { call.close(); call = null; } show("done"); return; }
  const ended = ENDED[s.state];
  if (ended) { $("#doneTitle").textContent = ended[0]; $("#doneText").textContent = ended[1]; show("done"); }
}

// ---- identity: both sides of the ID card, then a clip of the random challenges.
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
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
  } catch (err) { fail(new Error("无法打开摄像头，请允许使用摄像头后重试")); return; }
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

async function submitSignature() {
  const { copy, sign } = pads.need;
  if ((copy && pads.copy.empty) || (sign && pads.sign.empty)) {
    setStatus(message, copy ? "请先抄录风险提示语句。" : "请先签名。", "error"); return;
  }
  const canvases = [copy && pads.copy.canvas, sign && pads.sign.canvas].filter(Boolean);
  try {
    const body = {
      risk_sentence: copy ? $("#riskSentence").textContent : "本人亲笔签名",
      image_base64: combine(...canvases),
    };
    await api("POST", "/customer/signature", { token, body });
    pads.copy.clear(); pads.sign.clear();
    render(await api("GET", "/customer/session", { token }));
  } catch (err) { fail(err); }
}

function follow() {
  live(() => ({ role: "customer", token }), (msg) => {
    if (msg.type === "snapshot") render(msg.session);
    if (msg.type === "error") { sessionStorage.removeItem(TOKEN_KEY); fail(new Error(msg.detail)); }
  }, (up) => { $("#net").textContent = up ? "" : "网络重连中…"; });
}

async function init() {
  api("GET", "/consent-texts").then((c) => { riskSentence = c.risk_sentence; });
  $("#start").onclick = openInvitation;
  $("#agree").onclick = () => consent(true);
  $("#decline").onclick = () => { if (confirm("拒绝后将无法通过远程方式投保，确定不同意吗？")) consent(false); };
  $("#yes").onclick = () => answer("affirmative");
  $("#no").onclick = () => answer("negative");
  $("#clearCopy").onclick = () => pads.copy.clear();
  $("#clearSign").onclick = () => pads.sign.clear();
  $("#submitSignature").onclick = submitSignature;
  $("#idFront").onchange = (e) => uploadPhoto("id_front", e.target, "#doneFront", "#previewFront");
  $("#idBack").onchange = (e) => uploadPhoto("id_back", e.target, "#doneBack", "#previewBack");
  $("#recordLiveness").onclick = recordLiveness;
  $("#verify").onclick = submitIdentity;
  if (token) {
    try { render(await api("GET", "/customer/session", { token })); follow(); return; } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY); token = null;
    }
  }
  if (/^\/h5\/(invite|wx|bank)\//.test(location.pathname)) show("welcome");
  else setStatus(message, "页面已失效，请重新打开销售人员发送的链接。", "error");
}

init();
