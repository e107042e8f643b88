// @ts-check
// The JSON API and the live WebSocket, shared by the customer pages and the agent console.
// Problem documents (application/problem+json) become ApiError with the Chinese `detail`.

/**
 * A problem document (RFC 9457) as the API sends it; `code` is the machine-readable reason.
 * @typedef {{ detail?: string, code?: string, title?: string, retry_after?: number,
 *   [member: string]: unknown }} Problem
 */

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the network failed
   * @param {Problem | null} body
   */
  constructor(status, body) {
    super((body && body.detail) || `请求失败（${status}）`);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

/**
 * One call of the JSON API under /api/v1. The answer's shape is the endpoint's: callers name
 * it with a JSDoc cast where they rely on it.
 * @param {string} method
 * @param {string} path
 * @param {{ token?: string | null, body?: unknown }} [options]
 * @returns {Promise<any>}
 */
export async function api(method, path, { token, body } = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, { detail: "网络连接异常，请检查网络后重试", code: "network" });
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/**
 * A live connection that reconnects by itself after a dropped network (backoff up to 10 s).
 * @param {() => object} auth the first message on every (re)connection
 * @param {(message: any) => void} onMessage
 * @param {(open: boolean) => void} [onStatus]
 */
export function live(auth, onMessage, onStatus = () => {}) {
  /** @type {WebSocket | null} */
  let socket = null;
  let closed = false;
  let delay = 500;
  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/live`);
    socket = ws;
    ws.onopen = () => { delay = 500; ws.send(JSON.stringify(auth())); onStatus(true); };
    ws.onmessage = (event) => onMessage(JSON.parse(event.data));
    ws.onclose = () => {
      onStatus(false);
      if (!closed) setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  connect();
  return { close() { closed = true; if (socket) socket.close(); } };
}

// Staff pages: the login form, drawn into the page's empty login section. After a successful
// login `then(token)` runs (the token is kept for the tab); errors go to `fail`.
/**
 * @param {string} tokenKey
 * @param {(token: string) => unknown} then
 * @param {(err: unknown) => void} fail
 */
export function staffLoginForm(tokenKey, then, fail) {
  const section = $('[data-stage="login"]');
  section.innerHTML = `<h1>登录</h1>
    <label for="username">用户名</label><input id="username" autocomplete="username">
    <label for="password">密码</label>
    <input id="password" type="password" autocomplete="current-password">
    <button id="login">登录</button>`;
  const submit = async () => {
    try {
      const result = await api("POST", "/auth/login", { body: {
        username: $("#username").value.trim(), password: $("#password").value } });
      sessionStorage.setItem(tokenKey, result.token);
      await then(result.token);
    } catch (err) { fail(err); }
  };
  $("#login").onclick = submit;
  $("#password").addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID().replaceAll("-", "");
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The page's element for `selector`; the pages only ask for elements their HTML has. Its type
 * is `any`, so a use that needs more than HTMLElement names the type with a JSDoc cast.
 * @param {string} selector
 * @returns {any}
 */
export function $(selector) { return document.querySelector(selector); }

/** @param {string} id the data-stage to show; every other stage is hidden */
export function show(id) {
  document.querySelectorAll("[data-stage]").forEach((el) => {
    if (!(el instanceof HTMLElement)) return;
    el.classList.toggle("hidden", el.dataset.stage !== id);
  });
}

/**
 * @param {HTMLElement} el
 * @param {string} text
 * @param {string} [kind]
 */
export function setStatus(el, text, kind = "") {
  el.textContent = text;
  el.className = `status ${kind}`;
  el.classList.toggle("hidden", !text);
}

/**
 * The signed-in staff member (GET /auth/me).
 * @typedef {{ id: number, username: string, display_name: string, role: string,
 *   institution_id: number, branch_id: number | null, agent_id: number | null,
 *   permissions: string[] }} Me
 */

/**
 * The signed-in staff member of a desktop page, if they hold `permission`: their name goes to
 * #who and #logout is shown. Not signed in: the login stage; signed in without the
 * permission: the login stage with `deniedText` in `message`. Either way null. Other errors
 * are thrown to the page.
 * @param {string | null} token
 * @param {string} permission
 * @param {HTMLElement} message
 * @param {string} deniedText
 * @returns {Promise<Me | null>}
 */
export async function signedInWith(token, permission, message, deniedText) {
  /** @type {Me} */
  let me;
  try {
    me = await api("GET", "/auth/me", { token });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { show("login"); return null; }
    throw err;
  }
  $("#who").textContent = `${me.display_name}（${me.username}）`;
  $("#logout").classList.remove("hidden");
  if (!me.permissions.includes(permission)) {
    setStatus(message, deniedText, "error");
    show("login");
    return null;
  }
  return me;
}

