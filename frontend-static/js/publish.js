// The publish page: a camera or a screen, sent to this server over WHIP (RFC 9725) with
// H.264 and Opus. The stream key is the Bearer token and never leaves this page otherwise.

const channel = location.pathname.split('/').filter(Boolean)[1] || '';
const $ = (id) => document.getElementById(id);
const preview = $('preview');
const overlay = $('overlay');
const statusLine = $('status');
$('title').textContent = `Go live on channel ${channel}`;

let media = null;   // MediaStream
let pc = null;      // RTCPeerConnection
let session = null; // the WHIP Location
let statsTimer = null;
let lastBytes = null;

function setState(state, text) {
  document.body.dataset.state = state;
  statusLine.textContent = text;
  $('go').disabled = state === 'live' || state === 'connecting';
  $('stop').disabled = !(state === 'live' || state === 'connecting');
}

async function getMedia() {
  if (media) return media;
  if (!navigator.mediaDevices) {
    throw new Error('this page is not a secure context: open it as http://localhost or over https');
  }
  if ($('source').value === 'screen') {
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    let mic = null;
    try { mic = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (_) { /* screen only */ }
    media = new MediaStream([...screen.getVideoTracks(), ...(mic ? mic.getAudioTracks() : [])]);
  } else {
    media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      audio: true,
    });
  }
  preview.srcObject = media;
  overlay.hidden = true;
  return media;
}

/** Keeps only H.264 packetization-mode 1 (or Opus) in a transceiver's preferences. */
function prefer(transceiver, kind) {
  if (!RTCRtpSender.getCapabilities) return;
  const caps = RTCRtpSender.getCapabilities(kind);
  if (!caps || !transceiver.setCodecPreferences) return;
  const wanted = caps.codecs.filter((c) => kind === 'video'
    ? c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || '')
    : c.mimeType === 'audio/opus');
  const repair = caps.codecs.filter((c) => /\/(rtx|red|ulpfec)$/i.test(c.mimeType));
  if (wanted.length) transceiver.setCodecPreferences([...wanted, ...repair]);
}

function waitForIce(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 2000); // send what was gathered; the server is ICE-lite
  });
}

async function goLive(event) {
  event.preventDefault();
  const key = $('key').value.trim();
  if (!key) return;
  try {
    setState('connecting', 'Connecting…');
    const stream = await getMedia();
    pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) {
      const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      prefer(t, track.kind);
    }
    pc.addEventListener('connectionstatechange', () => {
      const s = pc && pc.connectionState;
      if (s === 'connected') setState('live', 'Live.');
      if (s === 'failed' || s === 'disconnected') setState('error', `Connection ${s}.`);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const res = await fetch(`/whip/${channel}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` },
      body: pc.localDescription.sdp,
    });
    const body = await res.text();
    if (res.status !== 201) {
      throw new Error(`the server said ${res.status}: ${body.trim()}`);
    }
    session = res.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    statsTimer = setInterval(showStats, 1000);
  } catch (e) {
    await stop(false);
    setState('error', `Not live: ${e.message}`);
  }
}

async function showStats() {
  if (!pc) return;
  const report = await pc.getStats();
  let bytes = 0;
  let size = '';
  report.forEach((s) => {
    if (s.type === 'outbound-rtp') {
      bytes += s.bytesSent || 0;
      if (s.kind === 'video' && s.frameWidth) {
        size = `${s.frameWidth}×${s.frameHeight}`;
        statusLine.dataset.width = String(s.frameWidth);
        statusLine.dataset.height = String(s.frameHeight);
      }
    }
  });
  const now = performance.now();
  if (lastBytes) {
    const kbps = Math.round(((bytes - lastBytes.bytes) * 8) / (now - lastBytes.at));
    statusLine.textContent = `${pc.connectionState === 'connected' ? 'Live' : pc.connectionState}` +
      ` · ${kbps} kbit/s${size ? ' · ' + size : ''}`;
    statusLine.dataset.kbps = String(kbps);
  }
  lastBytes = { bytes, at: now };
}

async function stop(report = true) {
  clearInterval(statsTimer);
  statsTimer = null;
  lastBytes = null;
  if (session) {
    try { await fetch(session, { method: 'DELETE' }); } catch (_) { /* the server may be gone */ }
    session = null;
  }
  if (pc) { pc.close(); pc = null; }
  if (report) setState('idle', 'Stopped. Not live.');
}

$('form').addEventListener('submit', goLive);
$('stop').addEventListener('click', () => stop());
$('preview-btn').addEventListener('click', () => getMedia().catch((e) => {
  statusLine.textContent = `No camera: ${e.message}`;
}));
$('source').addEventListener('change', () => {
  if (media && !pc) { media.getTracks().forEach((t) => t.stop()); media = null; }
});
window.addEventListener('pagehide', () => {
  if (session) fetch(session, { method: 'DELETE', keepalive: true }).catch(() => {});
});
