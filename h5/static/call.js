// The WebRTC side of the H5 call, shared by the customer page and the agent console.
// Contract with the server's call hub (docs/media.md): audio (microphone) sendrecv, video (VP8)
// sendrecv, a second receive-only audio line for the script's speech, a "control" data
// channel; one offer after ICE gathering (the server has no trickle ICE); answer pings.
import { api } from "/static/api.js";

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 5000); // use what was gathered so far rather than hang
  });
}

// How long a "disconnected" connection may take to recover before the page rejoins (the server
// notices a silent peer after its keep-alive timeout, 10 s by default, and interrupts the call).
const DISCONNECTED_GRACE_MS = 4000;

export class Call {
  constructor({ offerPath, token, remoteVideo, selfVideo, onMessage = () => {}, onState = () => {} }) {
    Object.assign(this, { offerPath, token, remoteVideo, selfVideo, onMessage, onState });
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
    pc.addTransceiver(this.media.getVideoTracks()[0], { direction: "sendrecv" });
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
    const answer = await api("POST", this.offerPath, {
      token: this.token, body: { sdp: pc.localDescription.sdp, type: pc.localDescription.type } });
    await pc.setRemoteDescription(answer);
  }

  // After a dropped network the page joins again by itself; the server keeps the room and
  // records the continuation in new segments.
  reconnect() {
    if (this.closed || this.reconnecting) return;
    this.reconnecting = true;
    setTimeout(async () => {
      this.reconnecting = false;
      if (this.closed) return;
      try { this.pc.close(); } catch (err) { /* already closed */ }
      try { await this.start(); } catch (err) {
        this.retry = Math.min(this.retry * 2, 10000);
        this.reconnect();
      }
    }, this.retry);
  }

  close() {
    this.closed = true;
    clearTimeout(this.graceTimer);
    if (this.pc) this.pc.close();
    if (this.media) this.media.getTracks().forEach((t) => t.stop());
    this.players.forEach((p) => { p.srcObject = null; });
  }
}
