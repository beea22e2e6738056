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
let serverCapKbps = 0; // the answer's b=AS: what the server lets a publisher send

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
    const [width, height] = $('resolution').value.split('x').map(Number);
    media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } },
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
  // The server relays video in the codec it is sent; H.264 is the one every viewer decodes.
  const codec = $('codec') ? $('codec').value : 'H264';
  const wanted = caps.codecs.filter((c) => {
    if (kind !== 'video') return c.mimeType === 'audio/opus';
    if (c.mimeType.toUpperCase() !== `VIDEO/${codec}`) return false;
    if (codec === 'H264') return /packetization-mode=1/.test(c.sdpFmtpLine || '');
    if (codec === 'VP9') return !/profile-id=[123]/.test(c.sdpFmtpLine || '');
    return true;
  });
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

/** The chosen bitrate (kbit/s, 0 for auto) on the video sender; auto leaves it to the
 *  congestion control and the server's cap. */
async function applyBitrate() {
  const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  if (!sender) return;
  const kbps = Number($('bitrate').value);
  const params = sender.getParameters();
  if (!params.encodings || !params.encodings.length) params.encodings = [{}];
  // With simulcast the choice is the full-size layer's; the smaller ones keep theirs.
  const top = params.encodings[params.encodings.length - 1];
  if (kbps > 0) top.maxBitrate = kbps * 1000; else delete top.maxBitrate;
  await sender.setParameters(params).catch((e) => console.warn(`bitrate: ${e.message}`));
}

/** The chosen size on the camera, live or not. */
async function applyResolution() {
  const track = media && media.getVideoTracks()[0];
  if (!track || $('source').value !== 'camera') return;
  const [width, height] = $('resolution').value.split('x').map(Number);
  await track.applyConstraints({ width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } })
    .catch((e) => console.warn(`size: ${e.message}`));
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
      const init = { direction: 'sendonly', streams: [stream] };
      if (track.kind === 'video' && $('layers').value === '3') {
        // Simulcast: quarter, half and full size, smallest first (the server ranks layers by
        // the picture they carry, whatever their names).
        init.sendEncodings = [
          { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 200_000 },
          { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 700_000 },
          { rid: 'f' },
        ];
      }
      const t = pc.addTransceiver(track, init);
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
    const cap = /^b=AS:(\d+)/m.exec(body);
    serverCapKbps = cap ? Number(cap[1]) : 0;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    await applyBitrate();
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
  let video = null;
  let estimate = 0;
  const layersSending = {};
  report.forEach((s) => {
    if (s.type === 'outbound-rtp') {
      bytes += s.bytesSent || 0;
      // With simulcast: the largest layer sending.
      if (s.kind === 'video' && (!video || (s.frameWidth || 0) > (video.frameWidth || 0))) video = s;
      if (s.kind === 'video' && s.rid) layersSending[s.rid] = s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : 'off';
    }
    if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) {
      estimate = s.availableOutgoingBitrate;
    }
  });
  const d = statusLine.dataset;
  if (video && video.frameWidth) {
    d.width = String(video.frameWidth);
    d.height = String(video.frameHeight);
    d.fps = String(Math.round(video.framesPerSecond || 0));
  }
  d.limitation = (video && video.qualityLimitationReason) || 'none';
  d.layers = Object.values(layersSending).filter((v) => v !== 'off').join(',');
  d.estimate = String(Math.round(estimate / 1000));
  const now = performance.now();
  if (lastBytes) {
    const kbps = Math.round(((bytes - lastBytes.bytes) * 8) / (now - lastBytes.at));
    d.kbps = String(kbps);
    const size = d.width ? ` · ${d.width}×${d.height} · ${d.fps} fps` : '';
    statusLine.textContent = `${pc.connectionState === 'connected' ? 'Live' : pc.connectionState}` +
      ` · ${kbps} kbit/s${size}`;
    const why = { bandwidth: 'the network', cpu: 'this computer', other: 'the browser' }[d.limitation];
    $('sending').textContent = [
      d.layers ? `layers ${d.layers.replaceAll(',', ', ')}` : '',
      estimate ? `Network estimate ${(estimate / 1e6).toFixed(1)} Mbit/s` : '',
      serverCapKbps ? `server allows up to ${(serverCapKbps / 1000).toFixed(1)} Mbit/s` : '',
      why ? `quality limited by ${why}` : '',
    ].filter(Boolean).join(' · ');
  }
  lastBytes = { bytes, at: now };
}

async function stop(report = true) {
  clearInterval(statsTimer);
  statsTimer = null;
  lastBytes = null;
  $('sending').textContent = '';
  if (session) {
    try { await fetch(session, { method: 'DELETE' }); } catch (_) { /* the server may be gone */ }
    session = null;
  }
  if (pc) { pc.close(); pc = null; }
  if (report) setState('idle', 'Stopped. Not live.');
}

// For diagnostics and tests: the connection and the last statistics.
window.itgPublisher = { get pc() { return pc; } };

$('form').addEventListener('submit', goLive);
$('stop').addEventListener('click', () => stop());
$('preview-btn').addEventListener('click', () => getMedia().catch((e) => {
  statusLine.textContent = `No camera: ${e.message}`;
}));
$('bitrate').addEventListener('change', () => applyBitrate());
$('resolution').addEventListener('change', () => applyResolution());
$('source').addEventListener('change', () => {
  if (media && !pc) { media.getTracks().forEach((t) => t.stop()); media = null; }
});
window.addEventListener('pagehide', () => {
  if (session) fetch(session, { method: 'DELETE', keepalive: true }).catch(() => {});
});
