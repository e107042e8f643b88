// @ts-check
// The live liveness check in the call (R-12, issue 15): the server gives each challenge over the
// call's data channel at a moment it chooses and judges the frames of the call itself; this page
// only shows what to do, large (the customer is often elderly, on a phone), with a countdown and
// the result. Messages: liveness_prepare {text, spot}, liveness_challenge {id, action,
// instruction, time_limit_ms, index, count}, liveness_result {scope: "challenge"|"run", passed,
// message, final, attempts_left, spot}. ``spot``: the number of a spot check during the script
// (issue 15), null for the check before it.

/** @type {HTMLElement | null} */
let panel = null;
/** @type {ReturnType<typeof setInterval> | undefined} */
let ticking;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let hiding;
// Whether the check on screen is a spot check during the script (issue 15).
let spot = false;

/** @returns {{box: HTMLElement, title: HTMLElement, count: HTMLElement, note: HTMLElement}} */
function parts() {
  if (!panel) {
    panel = document.createElement("div");
    panel.id = "liveCheck";
    panel.setAttribute("role", "alert");
    panel.style.cssText = "position:fixed;left:0;right:0;bottom:0;z-index:50;padding:20px 16px 28px;"
      + "background:rgba(0,0,0,.78);color:#fff;text-align:center;font-size:20px;line-height:1.5";
    panel.innerHTML = '<div class="live-title" style="font-size:40px;font-weight:bold"></div>'
      + '<div class="live-count" style="font-size:56px;font-weight:bold;color:#ffd54f"></div>'
      + '<div class="live-note"></div>';
    document.body.appendChild(panel);
  }
  const get = (/** @type {string} */ c) => /** @type {HTMLElement} */ (panel?.querySelector(c));
  return { box: panel, title: get(".live-title"), count: get(".live-count"), note: get(".live-note") };
}

/** @param {number} ms */
function countDown(ms) {
  const { count } = parts();
  clearInterval(ticking);
  const end = performance.now() + ms;
  const tick = () => {
    const left = Math.max(0, Math.ceil((end - performance.now()) / 1000));
    count.textContent = `${left} 秒`;
    if (left === 0) clearInterval(ticking);
  };
  tick();
  ticking = setInterval(tick, 250);
}

/** Show a liveness message of the call's control channel.
 * @param {{type: string, [key: string]: any}} m */
export function showLiveCheck(m) {
  const { box, title, count, note } = parts();
  clearTimeout(hiding);
  box.classList.remove("hidden");
  box.style.display = "";
  if (m.type === "liveness_prepare") {
    spot = Boolean(m.spot);
    title.textContent = spot ? "随机活体抽检" : "活体检测";
    count.textContent = "";
    note.textContent = m.text || "请正对摄像头，稍后按提示做动作";
  } else if (m.type === "liveness_challenge") {
    title.textContent = m.instruction;
    note.textContent = m.count > 1 ? `第 ${m.index} 个动作，共 ${m.count} 个`
      : `${spot ? "随机活体抽检，" : ""}请在倒计时结束前完成`;
    countDown(m.time_limit_ms);
  } else if (m.type === "liveness_result") {
    clearInterval(ticking);
    count.textContent = "";
    if (m.scope === "challenge") {
      title.textContent = m.passed ? "✓ 动作完成" : "✗ 动作未通过";
      note.textContent = m.message || "";
    } else {
      const what = m.spot || spot ? "活体抽检" : "活体检测";
      title.textContent = m.passed ? `✓ ${what}通过` : `✗ ${what}未通过`;
      note.textContent = m.message || "";
      if (m.passed) hiding = setTimeout(() => { box.style.display = "none"; }, 4000);
    }
  }
}
