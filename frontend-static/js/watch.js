// The watch page: plays /watch/<channel> over WHEP, shows "offline" while the stream is down
// and reconnects by itself when it comes back.
import { WhepPlayer } from './whep-player.js';
import { streams, resolution, escapeHtml } from './api.js';

const channel = location.pathname.split('/').filter(Boolean).pop();
const video = document.getElementById('video');
const overlay = document.getElementById('overlay');
const title = document.getElementById('title');
const statsBox = document.getElementById('stats');
const notice = document.getElementById('notice');
const player = new WhepPlayer(video, { url: `/whep/${channel}` });
// For tests and curious users: the latest stats, and when the first frame was shown
// (milliseconds since navigation start).
window.itg = { player, channel, stats: null, firstFrameMs: null };
if (video.requestVideoFrameCallback) {
  video.requestVideoFrameCallback(() => { window.itg.firstFrameMs = performance.now(); });
}
setInterval(async () => { window.itg.stats = await player.stats(); }, 250);

// The stream's video is in the codec the streamer sent (no transcoding: H.264, H.265, VP8, VP9
// or AV1): a browser that cannot decode it is told so, in words, instead of getting a black
// picture.
function decodes(codec) {
  try {
    const caps = RTCRtpReceiver.getCapabilities?.('video');
    const mime = `video/${codec}`.toLowerCase();
    return !caps || caps.codecs.some((c) => c.mimeType.toLowerCase() === mime);
  } catch (_) {
    return true;
  }
}
window.itg.h264 = decodes('H264');
function cannotDecode(codec) {
  if (codec === 'H264') {
    return 'This browser cannot decode H.264 video, which this stream uses. In Firefox: open '
      + 'about:addons, Plugins, enable "OpenH264 Video Codec provided by Cisco Systems" (Firefox '
      + 'downloads it on first use), then reload this page.';
  }
  return `This browser cannot decode ${codec} video, which this stream uses. Try another browser `
    + '(Chromium-based browsers decode H.264, VP8, VP9 and AV1; Firefox VP8, VP9 and AV1).';
}
let streamCodec = null;

function addReportLink() {
  const a = document.createElement('a');
  a.href = '/api/selftest';
  a.textContent = ' Open the network report.';
  a.target = '_blank';
  overlay.appendChild(a);
}

function show(state, text) {
  document.body.dataset.state = state;
  overlay.textContent = text || '';
  overlay.hidden = !text;
}

// Hide "Connecting…" as soon as a picture is there, not at the next API poll.
video.addEventListener('playing', () => {
  if (document.body.dataset.state === 'connecting' && !iceFailed) show('playing', '');
});

// A 406 says this browser cannot take the stream's codecs: retrying will not help.
let refused = null;
// When ICE fails (the browser's verdict, or no connection within a few seconds), say what was
// tried and where the server's own network report is.
let iceFailed = null;
function noteIceFailure(candidates) {
  const tried = candidates.length ? candidates.join(', ') : 'no address';
  iceFailed = `Could not connect to the server's media port (tried ${tried}). A firewall or NAT `
    + 'is probably in the way; the server\'s network report is at /api/selftest.';
  window.itg.iceFailed = iceFailed;
}
player.addEventListener('state', (e) => {
  if (e.detail.state === 'disconnected' && e.detail.iceFailed) noteIceFailure(e.detail.candidates);
  if (e.detail.state === 'playing') iceFailed = null;
  // A new session after a reconnect keeps the viewer's choice.
  if (e.detail.state === 'playing' && qualityChoice !== 'auto') {
    player.setLayer(qualityChoice).catch((err) => console.warn(`quality: ${err.message}`));
  }
  if (e.detail.state !== 'error') return;
  if (e.detail.status === 406) refused = e.detail.message;
  show('error', `Cannot play: ${e.detail.message}`);
});

// Simulcast: the stream's layers in a quality menu; "Auto" lets the server follow the link.
const quality = document.getElementById('quality');
const qualityBox = document.getElementById('quality-box');
let qualityChoice = 'auto';
function showLayers(layers) {
  const list = (layers || []).filter((l) => l.height);
  qualityBox.hidden = list.length < 2;
  const wanted = ['auto', ...list.map((l) => String(l.id))];
  const have = [...quality.options].map((o) => o.value);
  if (wanted.join() === have.join()) return;
  quality.innerHTML = '<option value="auto">Auto</option>'
    + list.slice().reverse().map((l) => `<option value="${l.id}">${l.height}p</option>`).join('');
  quality.value = wanted.includes(qualityChoice) ? qualityChoice : 'auto';
}
quality.addEventListener('change', async () => {
  qualityChoice = quality.value;
  try {
    const r = await player.setLayer(qualityChoice);
    window.itg.layer = r;
  } catch (e) {
    console.warn(`quality: ${e.message}`);
  }
});

let lastFrames = 0;
let lastProgress = Date.now();
let live = null;

async function tick() {
  let info = null;
  try {
    info = (await streams()).find((s) => String(s.channel) === channel);
  } catch (_) {
    show('offline', 'Server unreachable, retrying…');
    return;
  }
  if (!info) {
    show('error', 'No such channel.');
    return;
  }
  title.textContent = info.name;
  document.title = `${info.name} · ITG`;
  // Browsers' WebRTC decoders drop most frames of a stream with B-frames: say so, rather
  // than leave the viewer to guess why the picture stutters.
  notice.hidden = !(info.live && info.b_frames);
  notice.textContent = notice.hidden ? '' : 'This stream is encoded with B-frames, which browsers '
    + 'play back as a stutter. The streamer can fix it by turning B-frames off in the encoder '
    + '(OBS: Output → Encoder settings, x264 options bframes=0).';
  if (!info.live) {
    live = false;
    show('offline', 'Stream offline. It will play as soon as it is back.');
    return;
  }
  const stats = await player.stats();
  const frames = stats ? stats.framesDecoded : 0;
  if (frames > lastFrames) {
    lastFrames = frames;
    lastProgress = Date.now();
  }
  streamCodec = info.codec || null;
  showLayers(info.layers);
  const decodable = !streamCodec || decodes(streamCodec);
  const stalled = Date.now() - lastProgress > 6000;
  if (stalled && player.pc && player.pc.connectionState !== 'connected' && frames === 0) {
    noteIceFailure(player.remoteCandidates(player.pc));
  }
  if (!decodable || refused) {
    live = true;
    show('unsupported', decodable ? `Cannot play: ${refused}` : cannotDecode(streamCodec));
    return;
  }
  if (!player.pc || player.state === 'disconnected' || player.state === 'error' || stalled) {
    live = true;
    lastProgress = Date.now();
    lastFrames = 0;
    show('connecting', iceFailed ? `${iceFailed} Retrying…` : 'Connecting…');
    if (iceFailed) addReportLink();
    player.start().catch((e) => console.error(`player: ${e.message}`));
    return;
  }
  live = true;
  if (frames > 0) show('playing', '');
}

async function renderStats() {
  if (statsBox.hidden) return;
  const s = await player.stats();
  if (!s) return;
  const f = (v, d = 0) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));
  statsBox.innerHTML = `
    <div>resolution <b>${escapeHtml(resolution(s) || '–')}</b> · codec <b>${escapeHtml(streamCodec || '–')}</b></div>
    <div>frames/s <b>${f(s.fps)}</b> · decoded <b>${s.framesDecoded}</b></div>
    <div>bitrate <b>${f(s.kbps)}</b> kbit/s</div>
    <div>lost <b>${s.packetsLost ?? '–'}</b> of <b>${s.packetsReceived ?? '–'}</b></div>
    <div>jitter buffer <b>${f(s.jitterBufferMs)}</b> ms · RTT <b>${f(s.rttMs, 1)}</b> ms</div>`;
}

document.getElementById('unmute').addEventListener('click', (e) => {
  video.muted = !video.muted;
  e.currentTarget.textContent = video.muted ? 'Unmute' : 'Mute';
  video.play().catch(() => {});
});
document.getElementById('fullscreen').addEventListener('click', () => {
  (document.fullscreenElement ? document.exitFullscreen() : document.getElementById('stage').requestFullscreen()).catch(() => {});
});
document.getElementById('toggle-stats').addEventListener('click', () => {
  statsBox.hidden = !statsBox.hidden;
  renderStats();
});
window.addEventListener('pagehide', () => { player.stop(); });

show('connecting', 'Connecting…');
tick();
setInterval(tick, 2000);
setInterval(renderStats, 1000);
