// @ts-check
// The customer's connection during the call (issue 17 item 2): every few seconds the page reads
// its RTCPeerConnection's statistics and sends them to the server, which adds what it receives
// itself and decides whether the network is poor (the page never decides). The answer carries
// the hint to show while it is poor; the agent's console is told by the server.
import { api } from "/static/api.js";

export const REPORT_MS = 4000;

/**
 * What the connection measures now, from two getStats readings (loss over the interval).
 * @param {RTCStatsReport} report
 * @param {Map<string, number>} previous packets counters of the last reading, updated here
 * @returns {{ loss_pct: number | null, rtt_ms: number | null, send_fps: number | null, send_height: number | null, limitation: string | null }}
 */
export function measure(report, previous) {
  /** @type {{ loss_pct: number | null, rtt_ms: number | null, send_fps: number | null, send_height: number | null, limitation: string | null }} */
  const out = { loss_pct: null, rtt_ms: null, send_fps: null, send_height: null, limitation: null };
  /** @type {number[]} */
  const rtts = [];
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      if (typeof s.framesPerSecond === "number") out.send_fps = s.framesPerSecond;
      if (typeof s.frameHeight === "number") out.send_height = s.frameHeight;
      // Why the browser sends less ("cpu": the phone is slow, not the network).
      if (["none", "cpu", "bandwidth", "other"].includes(s.qualityLimitationReason)) out.limitation = s.qualityLimitationReason;
    } else if (s.type === "remote-inbound-rtp" && s.kind === "video") {
      // What the server's receiver reported back (RTCP): the loss of what this page sent.
      const lost = Number(s.packetsLost || 0);
      const key = `${s.id}`;
      const [lostBefore, sentBefore] = [previous.get(`${key}/lost`), previous.get(`${key}/sent`)];
      const sent = sentFor(report, s.localId);
      if (lostBefore !== undefined && sentBefore !== undefined && sent !== null && sent > sentBefore) {
        out.loss_pct = Math.max(0, Math.min(100, (100 * (lost - lostBefore)) / (sent - sentBefore)));
      } else if (typeof s.fractionLost === "number") {
        out.loss_pct = 100 * s.fractionLost;
      }
      previous.set(`${key}/lost`, lost);
      if (sent !== null) previous.set(`${key}/sent`, sent);
      if (typeof s.roundTripTime === "number") rtts.push(s.roundTripTime * 1000);
    } else if (s.type === "candidate-pair" && s.nominated && typeof s.currentRoundTripTime === "number") {
      rtts.push(s.currentRoundTripTime * 1000);
    }
  });
  if (rtts.length) out.rtt_ms = Math.max(...rtts);
  return out;
}

/** @param {RTCStatsReport} report @param {string | undefined} id */
function sentFor(report, id) {
  const local = id ? report.get(id) : undefined;
  return local && typeof local.packetsSent === "number" ? local.packetsSent : null;
}

/**
 * Reports the connection of `getPc()` while it is connected, every REPORT_MS.
 * @param {() => RTCPeerConnection | null} getPc
 * @param {() => string | null} getToken
 * @param {(hint: string) => void} onHint "" when the network is fine (again)
 * @returns {() => void} stops reporting
 */
export function reportNetwork(getPc, getToken, onHint) {
  const previous = new Map();
  let stopped = false;
  let busy = false;
  const tick = async () => {
    const pc = getPc();
    const token = getToken();
    if (busy || !pc || !token || pc.connectionState !== "connected") return;
    busy = true;
    try {
      const body = measure(await pc.getStats(), previous);
      const answer = await api("POST", "/customer/network", { token, body });
      if (!stopped) onHint(answer.poor ? answer.hint : "");
    } catch (err) {
      // Not in the call any more, or the report did not get through: nothing to show.
    } finally { busy = false; }
  };
  // Tests may report faster (`window.__networkReportMs`); the server measures over the interval.
  const every = Number(/** @type {any} */ (globalThis).__networkReportMs) || REPORT_MS;
  const timer = setInterval(tick, every);
  return () => { stopped = true; clearInterval(timer); onHint(""); };
}
