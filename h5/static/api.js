// The JSON API and the live WebSocket, shared by the customer pages and the agent console.
// Problem documents (application/problem+json) become ApiError with the Chinese `detail`.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `请求失败（${status}）`);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

export async function api(method, path, { token, body } = {}) {
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

// A live connection that reconnects by itself after a dropped network (backoff up to 10 s).
export function live(auth, onMessage, onStatus = () => {}) {
  let socket = null;
  let closed = false;
  let delay = 500;
  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/api/v1/live`);
    socket.onopen = () => { delay = 500; socket.send(JSON.stringify(auth())); onStatus(true); };
    socket.onmessage = (event) => onMessage(JSON.parse(event.data));
    socket.onclose = () => {
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
export function staffLoginForm(tokenKey, then, fail) {
  const section = document.querySelector('[data-stage="login"]');
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

export function $(selector) { return document.querySelector(selector); }

export function show(id) {
  document.querySelectorAll("[data-stage]").forEach((el) => {
    el.classList.toggle("hidden", el.dataset.stage !== id);
  });
}

export function setStatus(el, text, kind = "") {
  el.textContent = text;
  el.className = `status ${kind}`;
  el.classList.toggle("hidden", !text);
}
