// WhepPlayer: plays one channel of an ITG server (or any WHEP endpoint) in a <video>.
// No dependencies; works on any page:
//
//   import { WhepPlayer } from 'https://your-server:8080/js/whep-player.js';
//   const player = new WhepPlayer(document.querySelector('video'), {
//     url: 'https://your-server:8080/whep/77',
//   });
//   await player.start();
//
// The server allows cross-origin WHEP (CORS), so the page may live anywhere.

export class WhepPlayer extends EventTarget {
  /**
   * @param {HTMLVideoElement} video where to play
   * @param {{url: string, iceServers?: RTCIceServer[]}} options the WHEP endpoint
   */
  constructor(video, options) {
    super();
    this.video = video;
    this.url = new URL(options.url, document.baseURI).toString();
    this.iceServers = options.iceServers || [];
    this.pc = null;
    this.location = null;
    this.state = 'idle';
    this._last = null;
  }

  _setState(state, detail) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, ...detail } }));
  }

  /** The server's candidates from its answer, as `udp 1.2.3.4:20000`. */
  remoteCandidates(pc) {
    const sdp = pc.remoteDescription?.sdp || '';
    return sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')).map((l) => {
      const f = l.split(' ');
      return `${(f[2] || '').toLowerCase()} ${f[4]}:${f[5]}`;
    });
  }

  /** Connects (again). Resolves once the server answered; media follows. */
  async start() {
    await this.stop();
    this._setState('connecting');
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const stream = new MediaStream();
    pc.ontrack = (e) => {
      // Hold media back no longer than the network needs (the server's playout-delay
      // extension says the same for video): live, not smooth, is the point.
      if ('jitterBufferTarget' in e.receiver) e.receiver.jitterBufferTarget = 0;
      stream.addTrack(e.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
      this.video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === 'connected') this._setState('playing');
      if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
        // `iceFailed`: the connection never came up (nothing reached the server, or nothing
        // came back), as opposed to one that dropped after playing.
        const iceFailed = pc.connectionState === 'failed' && this.state !== 'playing';
        this._setState('disconnected', { iceFailed, candidates: this.remoteCandidates(pc) });
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(this.url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) {
      const why = (await res.text()).trim();
      this._setState('error', { status: res.status, message: why });
      throw new Error(`WHEP ${res.status}: ${why}`);
    }
    const location = res.headers.get('Location');
    // After a redirect to another node (viewer placement) the session lives there.
    this.location = location ? new URL(location, res.url || this.url).toString() : null;
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  }

  /**
   * Chooses the simulcast layer this viewer gets (the WHEP layer extension): a layer's id as
   * `/api/streams` lists it, or `'auto'` to let the server follow the viewer's link. Resolves
   * to the server's answer (`{ layer, target, auto }`).
   */
  async setLayer(layer) {
    if (!this.location) throw new Error('not connected');
    const res = await fetch(`${this.location}/layer`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(layer === 'auto' ? {} : { encodingId: String(layer) }),
    });
    if (!res.ok) throw new Error(`layer ${res.status}: ${(await res.text()).trim()}`);
    return res.json();
  }

  /** Ends the session on the server and closes the connection. */
  async stop() {
    const pc = this.pc;
    this.pc = null;
    if (pc) pc.close();
    if (this.location) {
      const loc = this.location;
      this.location = null;
      try { await fetch(loc, { method: 'DELETE' }); } catch (_) { /* the server may be gone */ }
    }
    this._last = null;
  }

  /**
   * What the browser reports about the stream: resolution, frame rate, bitrate, loss,
   * jitter-buffer delay and round-trip time.
   */
  async stats() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    const s = { framesDecoded: 0, audioPackets: 0 };
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.width = r.frameWidth;
        s.height = r.frameHeight;
        s.fps = r.framesPerSecond;
        s.packetsLost = r.packetsLost;
        s.packetsReceived = r.packetsReceived;
        s.bytes = r.bytesReceived;
        s.timestamp = r.timestamp;
        if (r.jitterBufferEmittedCount) {
          s.jitterBufferMs = (1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount;
        }
      }
      if (r.type === 'inbound-rtp' && r.kind === 'audio') s.audioPackets = r.packetsReceived || 0;
      if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime !== undefined) {
        s.rttMs = r.currentRoundTripTime * 1000;
      }
    });
    // Bitrate over at least half a second, whoever calls how often.
    if (s.bytes !== undefined) {
      if (!this._last) {
        this._last = { bytes: s.bytes, timestamp: s.timestamp, kbps: undefined };
      } else if (s.timestamp - this._last.timestamp >= 500) {
        const kbps = (8 * (s.bytes - this._last.bytes)) / (s.timestamp - this._last.timestamp);
        this._last = { bytes: s.bytes, timestamp: s.timestamp, kbps };
      }
      s.kbps = this._last.kbps;
    }
    return s;
  }
}
