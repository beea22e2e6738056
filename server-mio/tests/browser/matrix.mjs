// The tested-clients matrix: every WebRTC and FTL stack this server is known to work with, in
// every direction it can go, against the real binary in one run. Each row is a stack no one
// here wrote on at least one side (Chromium, GStreamer's webrtcbin, OBS 29 and Mixer's
// ftl-sdk through their captures), and each asserts what a user would see: frames decoded at
// the published size, sound, a first frame soon after asking.
//
// Rows (channel):
//   71  our FTL client (fixture 320x180)      -> Chromium watch page (WHEP)
//   71                                        -> Chromium over the WebSocket protocol
//   71                                        -> GStreamer webrtcbin (WHEP)
//   72  GStreamer webrtcbin (WHIP, 640x360 x264 + Opus, stream key) -> Chromium watch page
//   73  Chromium publish page (WHIP, fake camera)                  -> Chromium watch page
//   74  OBS 29.0.2 (FTL, its capture re-streamed)                  -> Chromium watch page
//   75  Mixer's ftl-sdk ftl_app (FTL, its capture re-streamed)    -> GStreamer webrtcbin (WHEP)
//   71                                        -> aiortc (WHEP)
//   76  aiortc (WHIP, 640x360 H.264 + Opus, stream key)          -> Chromium watch page, aiortc
//   77  aiortc (WHIP, 640x360 VP8 + Opus)                         -> aiortc (WHEP, in VP8)
//   78  libdatachannel set up as OBS 30+'s WHIP output (the 640x360 fixture + Opus)
//                                                                 -> Chromium watch page
//
// Writes matrix.json (a row per line, with versions, first frame and delivered bitrate) to the
// artifacts folder and prints the table. Firefox's row has its own script (firefox.mjs).
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_REPLAY_BIN, ITG_VIDEO, ITG_AUDIO,
// ITG_CAPTURES, ITG_GST, ITG_AIORTC_PY (the virtualenv's python), ITG_AIORTC, ITG_VIDEO_640,
// ITG_ARTIFACTS.
// Runs inside a loopback-only namespace (it adds 127.0.0.2 to lo for aiortc).
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, sleep, env, start, until, gstreamer, aiortc, loopbackAlias, CHROMIUM_ARGS } from './lib.mjs';
import { publishLikeObs, closeLibrary } from './obs_whip.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const CAPTURES = env('ITG_CAPTURES');
const GST = env('ITG_GST');
const AIORTC_PY = env('ITG_AIORTC_PY');
const AIORTC = env('ITG_AIORTC');
const HTTP = 'http://127.0.0.1:18200';
const FTL = '127.0.0.1:18204';

const rows = [];
let browser;
const dir = mkdtempSync(join(tmpdir(), 'itg-matrix-'));

function addKey(channel) {
  return execFileSync(SERVER, ['keys', 'add', '--data-dir', dir, '--channel', String(channel), '--name', `Matrix ${channel}`])
    .toString().trim().split('\n').pop();
}

async function live(channel) {
  const r = await fetch(`${HTTP}/api/streams`);
  return (await r.json()).streams.find((s) => s.channel === channel && s.live);
}

/** Runs GStreamer's webrtcbin client; resolves with its JSON line. */
const gst = (mode, url, extra = [], seconds = 6) => gstreamer(GST, mode, url, extra, seconds);
/** Runs aiortc's client; resolves with its JSON line. */
const aio = (mode, url, extra = [], seconds = 6) => aiortc(AIORTC_PY, AIORTC, mode, url, extra, seconds);

/** The watch page on `channel`: waits for `frames` decoded; returns what it saw. */
async function watchPage(channel, { frames = 30, audio = true, size = null } = {}) {
  const page = await browser.newPage();
  page.on('console', (m) => process.stderr.write(`[watch ${channel}] ${m.text()}\n`));
  try {
    await page.goto(`${HTTP}/watch/${channel}`);
    await page.waitForFunction((n) => (window.itg?.stats?.framesDecoded || 0) >= n, frames, { timeout: 20000 });
    if (audio) await page.waitForFunction(() => (window.itg?.stats?.audioPackets || 0) > 20, null, { timeout: 10000 });
    if (size) {
      await page.waitForFunction(([w, h]) => window.itg?.stats?.width === w && window.itg?.stats?.height === h, size, { timeout: 10000 })
        .catch(async () => { throw new Error(`channel ${channel} watched at ${JSON.stringify(await page.evaluate(() => window.itg.stats))}, not ${size}`); });
    }
    await sleep(1200);
    const s = await page.evaluate(() => ({ ...window.itg.stats, firstFrameMs: window.itg.firstFrameMs }));
    await page.screenshot({ path: join(ARTIFACTS, `matrix-watch-${channel}.png`) });
    return s;
  } finally {
    await page.close();
  }
}

function row(r) {
  rows.push(r);
  console.error(`ROW ${JSON.stringify(r)}`);
}

try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const keys = Object.fromEntries([71, 72, 73, 74, 75, 76, 77, 78].map((c) => [c, addKey(c)]));
  loopbackAlias();
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18200', '--ftl-port', '18204', '--webrtc-port', '20200',
    '--media-ports', '19200-19220', '--data-dir', dir], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTP}/api/streams`)).ok);
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  const chromiumVersion = `Chromium ${browser.version()}`;

  // 71: our FTL client with the fixture.
  start(env('ITG_CLIENT_BIN'), ['--server', FTL, '--key', keys[71], '--video', env('ITG_VIDEO'),
    '--audio', env('ITG_AUDIO'), '--loop'], 'ftl-client');
  await until('channel 71', 10000, async () => !!(await live(71)));

  let s = await watchPage(71, { size: [320, 180] });
  row({ publisher: 'ITG ftl-client (FTL)', viewer: `${chromiumVersion}, watch page (WHEP)`, size: `${s.width}x${s.height}`,
    audio_packets: s.audioPackets, first_frame_ms: Math.round(s.firstFrameMs), kbps: Math.round(s.kbps || 0) });

  // Chromium over the WebSocket protocol: the server offers, the page answers.
  const wsPage = await browser.newPage();
  await wsPage.goto(`${HTTP}/`);
  const ws = await wsPage.evaluate(async (url) => {
    const began = performance.now();
    const pc = new RTCPeerConnection();
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    document.body.append(video);
    pc.ontrack = (e) => { if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]); };
    const sock = new WebSocket(url);
    let firstFrame = null;
    video.requestVideoFrameCallback(() => { firstFrame = performance.now() - began; });
    sock.onmessage = async (m) => {
      const { event, data } = JSON.parse(m.data);
      if (event === 'offer') {
        await pc.setRemoteDescription(data);
        await pc.setLocalDescription(await pc.createAnswer());
        sock.send(JSON.stringify({ event: 'answer', data: { type: 'answer', sdp: pc.localDescription.sdp } }));
      }
    };
    const end = performance.now() + 15000;
    let stats = {};
    while (performance.now() < end) {
      await new Promise((r) => setTimeout(r, 250));
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') Object.assign(stats, { frames: r.framesDecoded, w: r.frameWidth, h: r.frameHeight, bytes: r.bytesReceived, t: r.timestamp });
        if (r.type === 'inbound-rtp' && r.kind === 'audio') stats.audio = r.packetsReceived;
      });
      if (stats.frames >= 60 && stats.audio > 20) break;
    }
    const t0 = { bytes: stats.bytes, t: stats.t };
    await new Promise((r) => setTimeout(r, 1000));
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') Object.assign(stats, { bytes: r.bytesReceived, t: r.timestamp }); });
    stats.kbps = (8 * (stats.bytes - t0.bytes)) / (stats.t - t0.t);
    sock.close();
    pc.close();
    return { ...stats, firstFrame };
  }, `${HTTP.replace('http', 'ws')}/websocket?channel=71`);
  await wsPage.close();
  if (!(ws.frames >= 60 && ws.audio > 20 && ws.w === 320)) throw new Error(`WebSocket viewer: ${JSON.stringify(ws)}`);
  row({ publisher: 'ITG ftl-client (FTL)', viewer: `${chromiumVersion}, WebSocket protocol`, size: `${ws.w}x${ws.h}`,
    audio_packets: ws.audio, first_frame_ms: Math.round(ws.firstFrame), kbps: Math.round(ws.kbps) });

  // GStreamer watches over WHEP.
  const gw = await gst('watch', `${HTTP}/whep/71`);
  if (gw.code !== 0 || gw.width !== 320 || gw.frames < 60 || gw.audio_buffers < 50) throw new Error(`GStreamer viewer: ${JSON.stringify(gw)}`);
  row({ publisher: 'ITG ftl-client (FTL)', viewer: `${gw.gstreamer} webrtcbin (WHEP)`, size: `${gw.width}x${gw.height}`,
    audio_packets: gw.audio_buffers, first_frame_ms: gw.first_frame_ms, kbps: gw.kbps });

  // 72: GStreamer publishes over WHIP (its RSA certificate, x264, Opus); Chromium watches.
  const gp = gst('publish', `${HTTP}/whip/72`, ['--key', keys[72], '--width', '640', '--height', '360', '--kbps', '1200'], 14);
  await until('channel 72 over WHIP', 10000, async () => (await live(72))?.protocol === 'whip');
  s = await watchPage(72, { size: [640, 360] });
  const info72 = await live(72);
  const gpr = await gp;
  if (gpr.code !== 0) throw new Error(`GStreamer publisher: ${JSON.stringify(gpr)}`);
  row({ publisher: `${gpr.gstreamer} webrtcbin (WHIP)`, viewer: `${chromiumVersion}, watch page (WHEP)`, size: `${s.width}x${s.height}`,
    audio_packets: s.audioPackets, first_frame_ms: Math.round(s.firstFrameMs), kbps: Math.round(s.kbps || 0),
    publisher_connected_ms: gpr.connected_ms, ingest_kbps: Math.round(info72.bitrate_bps / 1000) });

  // 73: Chromium publishes its fake camera through the publish page; Chromium watches.
  const pub = await browser.newPage();
  await pub.goto(`${HTTP}/publish/73`);
  await pub.fill('#key', keys[73]);
  const posted = Date.now();
  await pub.click('#go');
  await pub.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 15000 });
  const pubConnectedMs = Date.now() - posted;
  await until('channel 73 over WHIP', 10000, async () => (await live(73))?.protocol === 'whip');
  await pub.waitForFunction(() => Number(document.getElementById('status').dataset.width || 0) > 0, null, { timeout: 10000 });
  s = await watchPage(73);
  const sent = await pub.evaluate(() => [Number(document.getElementById('status').dataset.width), Number(document.getElementById('status').dataset.height)]);
  await pub.click('#stop');
  await pub.close();
  if (!(s.width > 0 && s.width === sent[0] && s.height === sent[1])) throw new Error(`watched ${s.width}x${s.height}, published ${sent}`);
  row({ publisher: `${chromiumVersion}, publish page (WHIP)`, viewer: `${chromiumVersion}, watch page (WHEP)`, size: `${s.width}x${s.height}`,
    audio_packets: s.audioPackets, first_frame_ms: Math.round(s.firstFrameMs), kbps: Math.round(s.kbps || 0), publisher_connected_ms: pubConnectedMs });

  // 74: OBS 29's own FTL session (its capture, re-streamed with a fresh handshake).
  start(env('ITG_REPLAY_BIN'), ['restream', join(CAPTURES, 'obs-29.0.2-1280x720-8s.pcap'), '--to', FTL, '--key', keys[74]], 'obs replay');
  await until('channel 74', 10000, async () => !!(await live(74)));
  s = await watchPage(74, { frames: 60, size: [1280, 720] });
  row({ publisher: 'OBS 29.0.2 (FTL, captured)', viewer: `${chromiumVersion}, watch page (WHEP)`, size: `${s.width}x${s.height}`,
    audio_packets: s.audioPackets, first_frame_ms: Math.round(s.firstFrameMs), kbps: Math.round(s.kbps || 0) });

  // 75: Mixer's ftl-sdk ftl_app (its capture) watched by GStreamer.
  start(env('ITG_REPLAY_BIN'), ['restream', join(CAPTURES, 'ftl_app-640x360-6s.pcap'), '--to', FTL, '--key', keys[75]], 'ftl_app replay');
  await until('channel 75', 10000, async () => !!(await live(75)));
  const gf = await gst('watch', `${HTTP}/whep/75`, [], 4);
  if (gf.code !== 0 || gf.width !== 640 || gf.frames < 30 || gf.audio_buffers < 30) throw new Error(`GStreamer viewer of ftl_app: ${JSON.stringify(gf)}`);
  row({ publisher: "Mixer ftl-sdk ftl_app 0.9.14 (FTL, captured)", viewer: `${gf.gstreamer} webrtcbin (WHEP)`, size: `${gf.width}x${gf.height}`,
    audio_packets: gf.audio_buffers, first_frame_ms: gf.first_frame_ms, kbps: gf.kbps });

  // aiortc watches the FTL stream over WHEP.
  const aw = await aio('watch', `${HTTP}/whep/71`);
  if (aw.code !== 0 || aw.width !== 320 || aw.frames < 60 || aw.audio_frames < 50) throw new Error(`aiortc viewer: ${JSON.stringify(aw)}`);
  row({ publisher: 'ITG ftl-client (FTL)', viewer: `aiortc ${aw.aiortc} (WHEP)`, size: `${aw.width}x${aw.height}`,
    audio_packets: aw.audio_frames, first_frame_ms: aw.first_frame_ms, kbps: null });

  // 76: aiortc publishes H.264 over WHIP (its own ICE with consent freshness, its ECDSA
  // certificate, libx264 through PyAV); Chromium and another aiortc watch.
  const ap = aio('publish', `${HTTP}/whip/76`, ['--key', keys[76], '--codec', 'h264'], 16);
  await until('channel 76 over WHIP', 10000, async () => (await live(76))?.protocol === 'whip');
  s = await watchPage(76, { size: [640, 360] });
  const aw76 = await aio('watch', `${HTTP}/whep/76`);
  const info76 = await live(76);
  const apr = await ap;
  if (apr.code !== 0) throw new Error(`aiortc publisher: ${JSON.stringify(apr)}`);
  if (aw76.code !== 0 || aw76.width !== 640 || aw76.height !== 360 || aw76.frames < 60 || aw76.audio_frames < 50) {
    throw new Error(`aiortc watching aiortc: ${JSON.stringify(aw76)}`);
  }
  row({ publisher: `aiortc ${apr.aiortc} (WHIP, H.264)`, viewer: `${chromiumVersion}, watch page (WHEP)`, size: `${s.width}x${s.height}`,
    audio_packets: s.audioPackets, first_frame_ms: Math.round(s.firstFrameMs), kbps: Math.round(s.kbps || 0),
    publisher_connected_ms: apr.connected_ms, ingest_kbps: Math.round(info76.bitrate_bps / 1000) });
  row({ publisher: `aiortc ${apr.aiortc} (WHIP, H.264)`, viewer: `aiortc ${aw76.aiortc} (WHEP)`, size: `${aw76.width}x${aw76.height}`,
    audio_packets: aw76.audio_frames, first_frame_ms: aw76.first_frame_ms, kbps: null });

  // 77: aiortc publishes VP8; an aiortc viewer (which offers VP8 and H.264) gets VP8.
  const ap77 = aio('publish', `${HTTP}/whip/77`, ['--key', keys[77], '--codec', 'vp8'], 10);
  await until('channel 77 in VP8', 10000, async () => (await live(77))?.codec === 'VP8');
  const aw77 = await aio('watch', `${HTTP}/whep/77`);
  const apr77 = await ap77;
  if (apr77.code !== 0) throw new Error(`aiortc VP8 publisher: ${JSON.stringify(apr77)}`);
  if (aw77.code !== 0 || aw77.width !== 640 || aw77.frames < 60) throw new Error(`aiortc watching VP8: ${JSON.stringify(aw77)}`);
  row({ publisher: `aiortc ${apr77.aiortc} (WHIP, VP8)`, viewer: `aiortc ${aw77.aiortc} (WHEP)`, size: `${aw77.width}x${aw77.height}`,
    audio_packets: aw77.audio_frames, first_frame_ms: aw77.first_frame_ms, kbps: null });

  // 78: libdatachannel, the library under OBS 30+'s WHIP output, set up as OBS sets it up.
  const obs = publishLikeObs({ url: `${HTTP}/whip/78`, key: keys[78], video: env('ITG_VIDEO_640'), seconds: 12 });
  await until('channel 78 over WHIP', 10000, async () => (await live(78))?.protocol === 'whip');
  s = await watchPage(78, { size: [640, 360] });
  const info78 = await live(78);
  const obsr = await obs;
  if (obsr.error || obsr.status !== 201 || obsr.frames_sent < 300) throw new Error(`the libdatachannel publisher: ${JSON.stringify(obsr)}`);
  if (!(info78.codecs.includes('opus') && info78.fps >= 25)) throw new Error(`the server saw ${JSON.stringify(info78)}`);
  row({ publisher: `${obsr.library} (WHIP, set up as OBS 30+'s WHIP output)`, viewer: `${chromiumVersion}, watch page (WHEP)`,
    size: `${s.width}x${s.height}`, audio_packets: s.audioPackets, first_frame_ms: Math.round(s.firstFrameMs), kbps: Math.round(s.kbps || 0),
    publisher_connected_ms: obsr.connected_ms, ingest_kbps: Math.round(info78.bitrate_bps / 1000) });

  writeFileSync(join(ARTIFACTS, 'matrix.json'), `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);
  console.log('| publisher | viewer | size | first frame ms | kbit/s |');
  for (const r of rows) console.log(`| ${r.publisher} | ${r.viewer} | ${r.size} | ${r.first_frame_ms} | ${r.kbps} |`);
  console.log(`matrix passed: ${rows.length} rows`);
} catch (e) {
  console.error(`matrix FAILED after ${rows.length} rows: ${e.stack || e}`);
  writeFileSync(join(ARTIFACTS, 'matrix.json'), `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
  closeLibrary();
}
process.exit(process.exitCode ?? 0);
