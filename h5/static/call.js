// @ts-check
// The WebRTC side of the H5 call, shared by the customer page and the agent console.
// Contract with the server's call hub (docs/media.md): audio (microphone) sendrecv, video (VP8)
// sendrecv, a second receive-only audio line for the script's speech, a "control" data
// channel; one offer after ICE gathering (the server has no trickle ICE); answer pings.
// A server without room for another call answers 503 with Retry-After: the page says so and
// tries again after that long (issue 16).
import { api, ApiError } from "/static/api.js";

/** @param {RTCPeerConnection} pc */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise(/** @param {(value?: unknown) => void} resolve */ (resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 5000); // use what was gathered so far rather than hang
  });
}

// How long a "disconnected" connection may take to recover before the page rejoins (the server
// notices a silent peer after its keep-alive timeout, 10 s by default, and interrupts the call).
const DISCONNECTED_GRACE_MS = 4000;

// the recording keeps at least 640×480. Under load or a poor network the browser should
// drop frames rather than resolution, and not go below this bitrate.
const MIN_VIDEO_KBPS = 300;
const MAX_VIDEO_KBPS = 1500;

// Asks the browser to keep the resolution (degradationPreference) on the video sender; browsers
// without it ignore the member or refuse the call, and the call goes on either way.
/** @param {RTCRtpSender} sender */
async function keepResolution(sender) {
  if (!sender || !sender.getParameters || !sender.setParameters) return;
  try {
    /** @type {RTCRtpSendParameters & { degradationPreference?: string }} */
    const params = sender.getParameters();
    params.degradationPreference = "maintain-resolution";
    if (!params.encodings || !params.encodings.length) params.encodings = [{}];
    params.encodings.forEach((e) => { e.maxBitrate = MAX_VIDEO_KBPS * 1000; e.scaleResolutionDownBy = 1; });
    await sender.setParameters(params);
  } catch (err) { console.warn("video sender parameters not applied", err); }
}

// The minimum (and starting) send bitrate for VP8, as Chromium reads it from the remote
// description's fmtp (other browsers ignore unknown fmtp parameters).
/** @param {string} sdp */
function withMinBitrate(sdp) {
  const lines = sdp.split("\r\n");
  const vp8 = new Set(lines.map((l) => /^a=rtpmap:(\d+) VP8\/90000/i.exec(l)).flatMap((m) => (m ? [m[1]] : [])));
  const extra = `x-google-min-bitrate=${MIN_VIDEO_KBPS};x-google-start-bitrate=${MIN_VIDEO_KBPS * 2}`;
  const out = [];
  for (const line of lines) {
    const fmtp = /^a=fmtp:(\d+) (.*)$/.exec(line);
    if (fmtp && vp8.has(fmtp[1])) { out.push(`${line};${extra}`); vp8.delete(fmtp[1]); continue; }
    out.push(line);
    const rtpmap = /^a=rtpmap:(\d+) VP8\/90000/i.exec(line);
    if (rtpmap && !lines.some((l) => l.startsWith(`a=fmtp:${rtpmap[1]} `))) {
      out.push(`a=fmtp:${rtpmap[1]} ${extra}`);
      vp8.delete(rtpmap[1]);
    }
  }
  return out.join("\r\n");
}

// The page's message for a server that is full (the server's own words when it sent them),
// with the seconds it asked us to wait.
export const BUSY = "当前线路繁忙，请稍后重试";
/** @param {number} seconds @param {string} [detail] */
export function busyMessage(seconds, detail = BUSY) { return `${detail}（${seconds}秒后自动重试）`; }

// How the pages show it: in their message box, cleared once the call is in.
/**
 * @param {HTMLElement} box
 * @param {(el: HTMLElement, text: string, kind?: string) => void} setStatus
 * @returns {(text: string) => void}
 */
export function showBusy(box, setStatus) {
  let shown = "";
  return (text) => {
    if (text) setStatus(box, text, "error");
    else if (shown && box.textContent === shown) setStatus(box, "");
    shown = text;
  };
}

/**
 * A message of the server on the call's data channel (not a ping).
 * @typedef {{ type: string, [member: string]: any }} CallMessage
 */

export class Call {
  /**
   * onBusy(text): the server is full and the page will try again (text "" once it is in).
   * @param {{ offerPath: string, token: string, remoteVideo: HTMLVideoElement,
   *   selfVideo: HTMLVideoElement, onMessage?: (message: CallMessage) => void,
   *   onState?: (state: RTCPeerConnectionState) => void, onBusy?: (text: string) => void }} options
   */
  constructor({ offerPath, token, remoteVideo, selfVideo, onMessage = () => {}, onState = () => {},
                onBusy = () => {} }) {
    this.offerPath = offerPath;
    this.token = token;
    this.remoteVideo = remoteVideo;
    this.selfVideo = selfVideo;
    this.onMessage = onMessage;
    this.onState = onState;
    this.onBusy = onBusy;
    /** @type {MediaStream | undefined} */
    this.media = undefined;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {RTCDataChannel | null} */
    this.control = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.graceTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.busyTimer = undefined;
    this.reconnecting = false;
    /** @type {HTMLAudioElement[]} */
    this.players = [];
    this.closed = false;
    this.retry = 1000;
  }

  async start() {
    if (!this.media) {
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: true, video: { width: 640, height: 480, frameRate: 15 } });
      this.selfVideo.srcObject = this.media;
    }
    const pc = new RTCPeerConnection();
    this.pc = pc;
    pc.addTransceiver(this.media.getAudioTracks()[0], { direction: "sendrecv" });
    const camera = this.media.getVideoTracks()[0];
    if ("contentHint" in camera) camera.contentHint = "detail"; // keep detail (faces, papers)
    const video = pc.addTransceiver(camera, { direction: "sendrecv" });
    await keepResolution(video.sender);
    pc.addTransceiver("audio", { direction: "recvonly" });
    const control = pc.createDataChannel("control");
    this.control = control;
    const remote = new MediaStream();
    pc.ontrack = (event) => {
      if (event.track.kind === "video") {
        remote.addTrack(event.track);
        this.remoteVideo.srcObject = remote;
      } else {
        // Received audio must be played, or the browser never decodes it.
        const player = new Audio();
        player.srcObject = new MediaStream([event.track]);
        player.play().catch(() => {});
        this.players.push(player);
      }
    };
    control.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "ping") control.send(JSON.stringify({ type: "pong", seq: message.seq }));
      else this.onMessage(message);
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return; // an earlier connection, replaced by a rejoin
      const state = pc.connectionState;
      this.onState(state);
      clearTimeout(this.graceTimer);
      if (state === "failed" || state === "closed") this.reconnect();
      // "disconnected" is often a stall of a few seconds that ICE recovers from by itself;
      // rejoining at once would turn every short stall into an interruption of the recording.
      if (state === "disconnected") {
        this.graceTimer = setTimeout(() => {
          if (pc === this.pc && pc.connectionState !== "connected") this.reconnect();
        }, DISCONNECTED_GRACE_MS);
      }
      if (state === "connected") this.retry = 1000;
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const offer = /** @type {RTCSessionDescription} */ (pc.localDescription);
    /** @type {RTCSessionDescriptionInit & { sdp: string }} */
    let answer;
    try {
      answer = await api("POST", this.offerPath, {
        token: this.token, body: { sdp: offer.sdp, type: offer.type } });
    } catch (err) {
      if (err instanceof ApiError && err.status === 503 && !this.closed) {
        this.busy(pc, err);
        return;
      }
      throw err;
    }
    this.onBusy("");
    await pc.setRemoteDescription({ type: answer.type, sdp: withMinBitrate(answer.sdp) });
    await keepResolution(video.sender); // some browsers keep the preference only once negotiated
  }

  /**
   * The server has no room for another call (or is changing nodes): say so, try again later.
   * @param {RTCPeerConnection} pc
   * @param {ApiError} err
   */
  busy(pc, err) {
    if (pc === this.pc) this.pc = null;
    try { pc.close(); } catch (e) { /* already closed */ }
    const seconds = Math.max(1, Math.min(120, Number((err.body && err.body.retry_after) || 5)));
    this.onBusy(busyMessage(seconds, (err.body && err.body.detail) || BUSY));
    clearTimeout(this.busyTimer);
    this.busyTimer = setTimeout(() => {
      if (this.closed) return;
      this.start().catch(() => this.reconnect());
    }, seconds * 1000);
  }

  // After a dropped network the page joins again by itself; the server keeps the room and
  // records the continuation in new segments.
  reconnect() {
    if (this.closed || this.reconnecting) return;
    this.reconnecting = true;
    setTimeout(async () => {
      this.reconnecting = false;
      if (this.closed) return;
      try { if (this.pc) this.pc.close(); } catch (err) { /* already closed */ }
      try { await this.start(); } catch (err) {
        this.retry = Math.min(this.retry * 2, 10000);
        this.reconnect();
      }
    }, this.retry);
  }

  close() {
    this.closed = true;
    clearTimeout(this.graceTimer);
    clearTimeout(this.busyTimer);
    if (this.pc) this.pc.close();
    if (this.media) this.media.getTracks().forEach((t) => t.stop());
    this.players.forEach((p) => { p.srcObject = null; });
  }
}
