// @ts-check
// The agent console: log in, pass the pre-check (licence, training, position, network: R-03)
// before anything else, create sessions, send invitations, follow the customer live, drive the
// script (explain and resume after a negative answer, R-24), complete or abort.
import { $, ApiError, api, live, setStatus, show, staffLoginForm } from "/static/api.js";
import { Call, showBusy } from "/static/call.js";

const TOKEN_KEY = "shuanglu.staff_token";
let token = sessionStorage.getItem(TOKEN_KEY);
/** @type {{ lat: number, lng: number, accuracy_m: number } | null} */
let location_ = null;
/** The open session: its id at once, the whole session view after the first refresh.
 * @type {any} */
let current = null;
/** @type {{ close(): void } | null} */
let stream = null;
/** @type {Call | null} */
let call = null;
const IN_CALL = new Set(["in_call", "disclosing", "signing"]);

function joinCall(id) {
  if (call) return;
  call = new Call({ offerPath: `/calls/${id}/agent/offer`, token: token || "",
    remoteVideo: $("#remoteVideo"), selfVideo: $("#selfVideo"), onBusy: showBusy(message, setStatus) });
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
  } catch (err) { setStatus(box, err instanceof Error ? err.message : String(err), "error"); }
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
        .filter((i) => i instanceof HTMLInputElement)
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
const INVITABLE = new Set(["invited", "opened"]);
const ABORTABLE = new Set(["created", "invited", "opened", "consented", "identity_verified",
  "in_call", "disclosing", "signing", "interrupted"]);

async function act(path, body) {
  try { await api("POST", `/sessions/${current.id}${path}`, { token, body }); await refresh(); }
  catch (err) { fail(err); }
}

// -- 发送邀请 through a channel (issue 17 item 4) ------------------------------------------
// The agent picks WeChat, a mini-program card, a bank-app push, SMS, a QR code or the link;
// the delivery status follows live (polled while it can still change, and on every session
// event), failures offer the fallbacks.

/**
 * @typedef {{ channel: string, label: string, available: boolean, reason: string }} ChannelOption
 * @typedef {{ code: string, label: string, detail: string }} DeliveryState
 * @typedef {{ id: number, choice: string, status: DeliveryState, recipient: string | null,
 *   link: string, qr_image: string | null, qrcode: { url: string } | null,
 *   fallback: { link: string, sms_text: string },
 *   fallbacks: { channel: string, label: string }[] }} InvitationView
 */

const CHANNEL_NAMES = /** @type {Record<string, string>} */ ({
  wechat: "微信", miniprogram: "小程序卡片", bank_app: "银行App推送", sms: "短信",
  qrcode: "二维码（客户扫码）", link: "复制链接",
});
// Worth asking again: the delivery or the customer's open can still change these.
const UNSETTLED = new Set(["pending", "sent", "delivered", "waiting_scan", "ready"]);
const POLL_MS = 2000;
/** @type {ReturnType<typeof setTimeout> | null} */
let invitePoll = null;
/** @type {string | null} */
let phoneOnRecord = null;

function stopInvitePoll() { if (invitePoll) { clearTimeout(invitePoll); invitePoll = null; } }

async function invite() {
  try {
    /** @type {{ channels: ChannelOption[], phone_masked: string | null }} */
    const offered = await api("GET", `/sessions/${current.id}/invitation-channels`, { token });
    phoneOnRecord = offered.phone_masked;
    $("#channelChoices").replaceChildren(...offered.channels.map((option) => {
      const b = document.createElement("button");
      b.className = "quiet";
      b.dataset.channel = option.channel;
      b.textContent = option.label;
      b.disabled = !option.available;
      if (option.reason) {
        const why = document.createElement("small");
        why.textContent = option.reason;
        b.append(why);
        b.title = option.reason;
      }
      b.onclick = () => choose(option.channel);
      return b;
    }));
    $("#smsPhoneBox").classList.add("hidden");
    $("#inviteChooser").classList.remove("hidden");
  } catch (err) { fail(err); }
}

/** @param {string} channel */
function choose(channel) {
  if (channel !== "sms") { sendInvitation(channel); return; }
  $("#smsPhone").value = "";
  $("#smsPhoneHint").textContent = phoneOnRecord
    ? `留空则发送至投保信息中的手机号 ${phoneOnRecord}；也可填写客户的其他手机号`
    : "投保信息中没有手机号，请填写客户手机号";
  $("#smsPhoneBox").classList.remove("hidden");
  $("#smsPhone").focus();
}

/** @param {string} channel @param {{ phone?: string }} [extra] */
async function sendInvitation(channel, extra = {}) {
  try {
    /** @type {InvitationView} */
    const view = await api("POST", `/sessions/${current.id}/channel-invitations`,
      { token, body: { channel, ...extra } });
    $("#inviteChooser").classList.add("hidden");
    setStatus(message, "");
    renderInvitation(view);
    await refresh();
  } catch (err) { fail(err); }
}

function sendSms() {
  const phone = $("#smsPhone").value.trim();
  if (phone && !/^1[3-9][0-9]{9}$/.test(phone)) {
    setStatus(message, "请输入 11 位手机号", "error");
    return;
  }
  sendInvitation("sms", phone ? { phone } : {});
}

/** @param {InvitationView} view */
function renderInvitation(view) {
  $("#invitation").classList.remove("hidden");
  $("#inviteChannel").textContent = CHANNEL_NAMES[view.choice] || view.choice;
  const pill = $("#inviteStatus");
  pill.textContent = view.status.label;
  pill.className = `pill ${view.status.code === "failed" ? "error" : view.status.code === "opened" ? "ok" : "wait"}`;
  $("#inviteRecipient").textContent = view.recipient ? `发送至 ${view.recipient}` : "";
  const qr = view.qr_image || (view.qrcode && view.qrcode.url) || "";
  $("#inviteQrBox").classList.toggle("hidden", !qr || view.status.code === "opened");
  if (qr && $("#inviteQr").getAttribute("src") !== qr) $("#inviteQr").src = qr;
  $("#inviteQrHint").textContent = view.qr_image
    ? "请客户用微信“扫一扫”或手机相机扫描二维码，打开后按页面提示办理（仅限一次）"
    : "请客户用微信扫描二维码关注公众号，公众号将回复邀请链接";
  const failed = view.fallbacks.length > 0;
  $("#inviteCopyBox").classList.toggle("hidden", !(view.choice === "link" || failed));
  $("#inviteLink").textContent = view.fallback.link;
  $("#inviteSms").textContent = view.fallback.sms_text;
  $("#inviteFallbacks").classList.toggle("hidden", !failed);
  $("#fallbackButtons").replaceChildren(...view.fallbacks.map((f) => {
    const b = document.createElement("button");
    b.className = "secondary";
    b.textContent = `改用${f.label}`;
    b.onclick = () => { if (f.channel === "sms") { invite().then(() => choose("sms")); } else { sendInvitation(f.channel); } };
    return b;
  }));
  stopInvitePoll();
  if (UNSETTLED.has(view.status.code)) {
    const id = current.id;
    invitePoll = setTimeout(() => { if (current && current.id === id) followInvitation(); }, POLL_MS);
  }
}

async function followInvitation() {
  if (!current) return;
  try {
    renderInvitation(await api("GET", `/sessions/${current.id}/channel-invitation`, { token }));
  } catch (err) {
    // None sent through a channel yet (404): nothing to show.
    if (!(err instanceof ApiError && err.status === 404)) fail(err);
  }
}

async function interrupt() {
  const reason = prompt("中断原因", "网络中断");
  if (reason) await act("/call/interrupt", { reason });
}

// What the server accepts now (it refuses everything else, R-24/R-30): the script starts only
// with both parties' media connected and recorded; a step that needs no answer moves on only
// once it was read in full.
const bothRecorded = (s) => ["customer", "agent"].every((r) => (s.call_parties[r] || {}).recording);

function callStatus(s) {
  if (!IN_CALL.has(s.state)) return "";
  const party = (r, label) => `${label}${(s.call_parties[r] || {}).recording ? "已接通录制" : "未接通"}`;
  let text = `${party("customer", "客户")} · ${party("agent", "本人")}`;
  const step = s.current_step;
  if (s.state === "disclosing" && step && !s.paused) {
    if (s.answer_open) text += step.answer === "none" ? " · 本项已读完" : " · 等待客户回答";
    else text += step.speaker === "agent" ? " · 请宣读本项内容" : " · 正在播报本项";
  }
  return text;
}

// R-13 live: presence breaches from the timeline, shown until the customer is back.
const PRESENCE_ALERTS = {
  customer_left: "客户已离开画面，话术已暂停，请提醒客户回到镜头前",
  second_face_appeared: "画面中出现其他人，话术已暂停，请确认仅客户本人在场",
  face_changed: "出镜人员与核验身份的客户不一致，话术已暂停",
};
// Issue 17 item 2: the server decided the customer's network is poor (or fine again).
function showNetwork(event) {
  const poor = !!event && event.type === "network_poor";
  $("#netAlert").textContent = poor
    ? `⚠ 客户网络信号较弱（${(event.data.reasons || []).join("，")}），画面或声音可能卡顿；客户页面已提示移到信号好的地方或连接 Wi-Fi`
    : "";
  $("#netAlert").classList.toggle("hidden", !poor);
}

function onEvent(event) {
  const alert = $("#liveAlert");
  if (event.type === "presence_alert") {
    alert.textContent = `⚠ ${PRESENCE_ALERTS[event.data.type] || event.data.message || "客户在场异常"}`;
    alert.classList.remove("hidden");
  } else if (event.type === "presence_restored") {
    alert.classList.add("hidden");
  } else if (event.type === "answer_heard") {
    const verdict = { affirmative: "肯定", negative: "否定", unclear: "未听清" }[event.data.verdict];
    $("#heardLive").textContent = `客户说：“${event.data.transcript || "（无法识别）"}”（${verdict || event.data.verdict}）`;
  } else if (event.type === "customer_device_denied") {
    const what = [event.data.camera !== "ok" && "摄像头", !["ok", "unused"].includes(event.data.microphone) && "麦克风"]
      .filter(Boolean).join("和") || "摄像头";
    alert.textContent = `⚠ 客户的${what}${event.data.camera === "missing" ? "不可用" : "未授权"}，客户页面已显示开启方法；客户音视频接通前不能开始讲解`;
    alert.classList.remove("hidden");
  } else if (event.type === "customer_device_ready") {
    alert.classList.add("hidden");
  } else if (event.type === "network_poor" || event.type === "network_recovered") {
    showNetwork(event);
  } else if (event.type === "customer_reentered") {
    setStatus(message, `客户已重新进入（${event.data.via === "resume_code" ? "验证码" : "原链接"}），会话继续`, "ok");
    $("#resumeCodeShown").classList.add("hidden");
  } else if (event.type === "step_replay_requested") {
    $("#heardLive").textContent = `客户点击了“再听一遍”（本项第 ${event.data.count} 次），正在重新播报`;
  } else if (event.type === "presence_unavailable") {
    alert.textContent = "⚠ 无法在通话中核验客户本人在场（将记为严重质检问题）";
    alert.classList.remove("hidden");
  } else if (event.type === "live_liveness_failed") { // the check in the call (issue 15)
    const face = event.data.face_match || {};
    const why = face.status === "mismatch"
      ? `通话画面中的人脸与身份证照片不一致，比对距离 ${face.distance ?? "-"}，通过阈值 ${face.threshold ?? "-"}`
      : (event.data.reason || "");
    const what = event.data.spot ? `第 ${event.data.spot} 次随机活体抽检` : "通话中活体检测";
    alert.textContent = event.data.final
      ? `⚠ 客户${what}未通过（${why}），次数已用尽，${event.data.spot ? "话术不能继续" : "不能开始讲解"}，请终止本次录制`
      : `客户${what}未通过（${why}），正在重新检测`;
    alert.classList.remove("hidden");
  } else if (event.type === "live_liveness_passed") {
    alert.classList.add("hidden");
  } else if (event.type === "live_liveness_spot_due") { // issue 15: a check during the script
    alert.textContent = `客户正在进行第 ${event.data.check} 次随机活体抽检，通过后自动播报下一项`;
    alert.classList.remove("hidden");
  }
}

// The session's pause_reason while a spot check of liveness holds the script (issue 15).
const SPOT_HOLD = "live_liveness_spot_check";

function renderActions(s) {
  const buttons = (ACTIONS[s.state] || []).map(([label, handler]) => {
    const b = document.createElement("button"); b.textContent = label; b.onclick = handler; return b;
  });
  if (s.state === "in_call" && !bothRecorded(s)) {
    buttons[0].disabled = true; buttons[0].title = "客户和本人的音视频都接通录制后才能开始";
  }
  const step = s.current_step;
  const spotCheck = s.paused && s.pause_reason === SPOT_HOLD;
  if (s.state === "disclosing" && spotCheck) {
    // Issue 15: the script waits for the customer's spot check of liveness; nothing to resume.
    const b = document.createElement("button");
    b.textContent = "随机活体抽检中…"; b.disabled = true;
    buttons.unshift(b);
  } else if (s.state === "disclosing" && s.paused) {
    const b = document.createElement("button");
    b.textContent = "已解释说明，继续";
    b.onclick = () => { const note = prompt("解释说明内容（将记录在时间轴）"); if (note) act("/script/resume", { note }); };
    buttons.unshift(b);
  } else if (s.state === "disclosing" && step && step.answer === "none") {
    const b = document.createElement("button");
    b.textContent = "已完成本项，下一步";
    b.disabled = !s.answer_open;
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
  $("#sessionState").textContent = s.state_label + (!s.paused ? ""
    : s.pause_reason === SPOT_HOLD ? "（客户随机活体抽检中）" : "（客户需要解释）");
  $("#callStatus").textContent = callStatus(s);
  const c = s.order.customer;
  $("#sessionInfo").textContent = `${s.order.application_no} · ${s.order.product.name} · 投保人 ${c.name}（${s.customer_age} 岁）`;
  // An alert raised before the console was opened (or reloaded) stays shown while it lasts.
  showNetwork(IN_CALL.has(s.state)
    ? timeline.events.filter((e) => e.type === "network_poor" || e.type === "network_recovered").pop()
    : null);
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
  renderResumeCode(s);
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

// The customer's way back in (issue 17): a one-time 6-digit code to read out, one at a time,
// 10 minutes, single use; the customer enters it on the used link's page or /h5/resume.
const RESUMABLE = new Set(["opened", "consented", "identity_verified", "in_call", "disclosing",
  "signing", "interrupted"]);
function renderResumeCode(s) {
  $("#resumeBox").classList.toggle("hidden", !RESUMABLE.has(s.state));
}

async function resumeCode() {
  try {
    const issued = await api("POST", `/sessions/${current.id}/resume-code`, { token });
    $("#resumeCodeValue").textContent = issued.code;
    const until = new Date(issued.expires_at).toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit" });
    $("#resumeCodeHint").textContent = `${until} 前有效，只能使用一次。请客户重新点击邀请链接（或打开 ${location.origin}/h5/resume），输入验证码即可回到当前进度。`;
    $("#resumeCodeShown").classList.remove("hidden");
  } catch (err) { fail(err); }
}

async function openSession(id) {
  current = { id };
  stopInvitePoll();
  $("#invitation").classList.add("hidden");
  $("#inviteChooser").classList.add("hidden");
  $("#liveAlert").classList.add("hidden");
  $("#netAlert").classList.add("hidden");
  $("#resumeCodeShown").classList.add("hidden");
  show("session");
  if (stream) stream.close();
  stream = live(() => ({ role: "staff", token, session_id: id }), (msg) => {
    if (msg.type === "event" && current && current.id === id) onEvent(msg.event);
    if (msg.type === "snapshot" && current && current.id === id) {
      refresh().catch(fail);
      if (!$("#invitation").classList.contains("hidden")) followInvitation();
    }
  });
  await refresh();
  if (INVITABLE.has(current.state)) await followInvitation();
}

async function init() {
  staffLoginForm(TOKEN_KEY, async (t) => { token = t; await enter(); }, fail);
  $("#runPrecheck").onclick = precheck;
  $("#resumeCodeButton").onclick = resumeCode;
  $("#create").onclick = create;
  $("#product").onchange = productFields;
  $("#refresh").onclick = () => listSessions().catch(fail);
  $("#back").onclick = () => {
    if (stream) stream.close(); stream = null; stopInvitePoll(); leaveCall(); home().catch(fail);
  };
  $("#inviteCancel").onclick = () => $("#inviteChooser").classList.add("hidden");
  $("#smsSend").onclick = sendSms;
  /** @param {string} selector @param {string} what */
  const copier = (selector, what) => () => navigator.clipboard.writeText($(selector).textContent)
    .then(() => setStatus(message, "已复制", "ok"), () => setStatus(message, `请手动复制${what}`, "error"));
  $("#copyLink").onclick = copier("#inviteLink", "链接");
  $("#copySms").onclick = copier("#inviteSms", "短信内容");
  if (token) { try { await enter(); return; } catch (err) { sessionStorage.removeItem(TOKEN_KEY); } }
  show("login");
}

init();
