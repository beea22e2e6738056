// The network matrix and latency bench's browser side (run by network.sh, which sets up the
// namespaces, servers and senders): for every condition and run, each target is watched by a
// fresh headless Chromium in the viewer namespace for SECONDS; the loss, jitter or rate limit
// is applied where the viewer receives. Prints one JSON line per run (RUN {...}) and, at the
// end, the tables.
//
// Each frame of the input carries its number as a barcode in its top 32 rows (16 blocks of
// 40 px: 12 bits of frame number, then the complement of its low 4 bits as a check); the page
// reads it back in requestVideoFrameCallback, and the frame's wire instant (its last packet
// leaving the sender) comes from the sender's frame log.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// puppeteer-core from the browser tests' modules (NODE_MODULES).
const puppeteer = createRequire(`${process.env.NODE_MODULES}/`)('puppeteer-core');

const env = (k, d) => process.env[k] ?? d;
const TARGETS = JSON.parse(env('NET_TARGETS'));
const CONDITIONS = env('NET_CONDITIONS', 'loss0 loss5 loss10 loss20 jitter rate2m').split(/\s+/).filter(Boolean);
const LATENCY = env('NET_LATENCY_CONDITIONS', 'loss0 loss5').split(/\s+/);
const RUNS = Number(env('RUNS', '2'));
const SECONDS = Number(env('NET_SECONDS', '8'));
const VIEW_NS = env('VIEW_NS', 'itgview');
const WRAPPER = env('CHROMIUM_WRAPPER');
const SERVER_PORTS = env('SERVER_UDP_PORTS'); // an nft set body: "20000, 20001, 30000-39999"
const CROSS = env('CROSS_TRAFFIC_CMD', '');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function nftView(rules) {
  execFileSync('ip', ['netns', 'exec', VIEW_NS, 'nft', '-f', '-'], { input: rules });
}

/** Puts the viewer's network in `condition`; returns a function that restores it. */
function apply(condition) {
  const undo = [];
  const loss = /^loss(\d+)$/.exec(condition);
  if (loss && Number(loss[1]) > 0) {
    // Where datagrams are delivered (the viewer's input hook): network loss, not a refused send.
    nftView(`table inet itg_loss {
  chain in {
    type filter hook input priority 0;
    ip saddr 10.77.0.1 udp sport { ${SERVER_PORTS} } numgen random mod 100 < ${loss[1]} drop
  }
}
`);
    undo.push(() => nftView('delete table inet itg_loss'));
  }
  if (condition === 'jitter') {
    // A 20 Mbit/s link that bursty cross traffic shares with the media: queueing delay that
    // comes and goes (0-30 ms), as on a busy home uplink. This kernel has no netem.
    execFileSync('tc', ['qdisc', 'replace', 'dev', 'v0', 'root', 'tbf', 'rate', '20mbit', 'burst', '16kb', 'latency', '100ms']);
    // `exec`: the signal below must reach the sender itself, not a shell that leaves it running
    // into the next condition.
    const cross = spawn('/bin/sh', ['-c', `exec ${CROSS}`], { stdio: 'ignore' });
    undo.push(() => { cross.kill('SIGTERM'); execFileSync('tc', ['qdisc', 'del', 'dev', 'v0', 'root']); });
  }
  const rate = /^rate(\d+)m$/.exec(condition);
  if (rate) {
    // The viewer's link at this rate with a 300 ms queue: keyframe bursts wait their turn.
    execFileSync('tc', ['qdisc', 'replace', 'dev', 'v0', 'root', 'tbf', 'rate', `${rate[1]}mbit`, 'burst', '16kb', 'latency', '300ms']);
    undo.push(() => execFileSync('tc', ['qdisc', 'del', 'dev', 'v0', 'root']));
  }
  return () => { for (const u of undo.reverse()) { try { u(); } catch (e) { console.error(`restore: ${e}`); } } };
}

/** Runs in the page: signals, watches for `seconds`, returns stats and the frames it saw. */
async function watch(cfg) {
  const began = cfg.kind === 'watch' ? 0 : performance.now();
  let pc;
  let video;
  const gathered = (p) => new Promise((r) => {
    if (p.iceGatheringState === 'complete') return r();
    p.addEventListener('icegatheringstatechange', () => p.iceGatheringState === 'complete' && r());
    setTimeout(r, 2000);
  });
  let janus = null;
  if (cfg.kind === 'watch') {
    for (let i = 0; i < 100 && !window.itg?.player?.pc; i++) await new Promise((r) => setTimeout(r, 20));
    pc = window.itg.player.pc;
    video = document.querySelector('video');
  } else {
    video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    document.body.append(video);
    pc = new RTCPeerConnection();
    pc.ontrack = (e) => { if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]); };
    if (cfg.kind === 'whep') {
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const r = await fetch(cfg.url, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription.sdp });
      if (r.status !== 201) throw new Error(`WHEP ${r.status}: ${await r.text()}`);
      await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    } else {
      const api = cfg.url;
      const post = async (path, body) => (await fetch(api + path, { method: 'POST', body: JSON.stringify({ ...body, transaction: Math.random().toString(36).slice(2) }) })).json();
      const sid = (await post('', { janus: 'create' })).data.id;
      const hid = (await post(`/${sid}`, { janus: 'attach', plugin: 'janus.plugin.streaming' })).data.id;
      janus = { post, sid, hid };
      await post(`/${sid}/${hid}`, { janus: 'message', body: { request: 'watch', id: cfg.mountpoint } });
      let offer = null;
      for (let i = 0; i < 20 && !offer; i++) {
        const evs = await (await fetch(`${api}/${sid}?maxev=5&rid=${Date.now()}`)).json();
        for (const ev of [].concat(evs)) if (ev.jsep) offer = ev.jsep;
      }
      if (!offer) throw new Error('Janus sent no offer');
      await pc.setRemoteDescription(offer);
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      await post(`/${sid}/${hid}`, { janus: 'message', body: { request: 'start' }, jsep: { type: 'answer', sdp: pc.localDescription.sdp } });
    }
  }
  const canvas = document.createElement('canvas');
  canvas.width = 640;
  canvas.height = 32;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const frames = [];
  let unreadable = 0;
  let firstFrame = null;
  const onFrame = (_now, meta) => {
    if (firstFrame === null) firstFrame = performance.now() - began;
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (vw && vh) {
      ctx.drawImage(video, 0, 0, vw, (32 * vh) / 360, 0, 0, 640, 32);
      const px = ctx.getImageData(0, 0, 640, 32).data;
      const bit = (b) => (px[(16 * 640 + 40 * b + 20) * 4] > 128 ? 1 : 0);
      let n = 0;
      for (let b = 0; b < 12; b++) n |= bit(b) << b;
      let check = 0;
      for (let b = 0; b < 4; b++) check |= bit(12 + b) << b;
      if ((check ^ 0xf) === (n & 0xf) && meta.receiveTime !== undefined) {
        frames.push([n, performance.timeOrigin + meta.receiveTime, performance.timeOrigin + meta.expectedDisplayTime]);
      } else {
        unreadable++;
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const end = began + cfg.seconds * 1000;
  while (performance.now() < end) await new Promise((r) => setTimeout(r, 100));
  const s = {};
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      for (const k of ['framesDecoded', 'framesReceived', 'framesDropped', 'freezeCount', 'totalFreezesDuration', 'packetsReceived',
        'packetsLost', 'nackCount', 'pliCount', 'firCount', 'retransmittedPacketsReceived', 'fecPacketsReceived', 'fecPacketsDiscarded',
        'jitterBufferDelay', 'jitterBufferEmittedCount', 'frameWidth']) s[k] = r[k];
    }
  });
  pc.close();
  if (janus) await janus.post(`/${janus.sid}`, { janus: 'destroy' }).catch(() => {});
  return { ...s, firstFrame, unreadable, frames };
}

/** The frame log of a sender: frame number -> wire instants (ms since the epoch), ascending. */
function wireTimes(path) {
  const m = new Map();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const [n, us] = line.split(' ').map(Number);
    if (!Number.isFinite(us)) continue;
    const k = n & 0xfff;
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(us / 1000);
  }
  return m;
}

/** Wire-to-receive and wire-to-display of each frame the page saw. */
function latencies(target, frames) {
  const wires = wireTimes(target.frames);
  const out = [];
  for (const [n, recv, disp] of frames) {
    // The last send of that frame number before it was received (the input loops).
    const sends = wires.get(n) || [];
    let wire = null;
    for (const t of sends) if (t <= recv + 1 && (wire === null || t > wire)) wire = t;
    if (wire === null || recv - wire > 5000) continue;
    out.push([n, recv - wire, disp - wire]);
  }
  return out;
}

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const median = (xs) => pct(xs, 50);

async function runOne(target, condition) {
  const browser = await puppeteer.launch({
    executablePath: WRAPPER,
    pipe: true,
    headless: true,
    args: ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns', '--autoplay-policy=no-user-gesture-required'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(target.page);
    const r = await page.evaluate(watch, { kind: target.kind, url: target.url, mountpoint: target.mountpoint ?? 1, seconds: SECONDS });
    const lat = latencies(target, r.frames);
    delete r.frames;
    return { ...r, lat, recv: lat.map((x) => x[1]), disp: lat.map((x) => x[2]) };
  } finally {
    await browser.close().catch(() => {});
  }
}

const results = [];
for (const condition of CONDITIONS) {
  for (let run = 1; run <= RUNS; run++) {
    for (const target of TARGETS) {
      if (target.latencyOnly && !LATENCY.includes(condition)) continue;
      const restore = apply(condition);
      let r;
      try {
        await sleep(300);
        r = await runOne(target, condition);
      } catch (e) {
        r = { error: String(e) };
      } finally {
        restore();
      }
      const row = { condition, run, target: target.name, ...r };
      results.push(row);
      const { recv, disp, lat, ...brief } = row;
      brief.recvP50 = median(recv || []);
      brief.recvP95 = pct(recv || [], 95);
      brief.dispP50 = median(disp || []);
      brief.dispP95 = pct(disp || [], 95);
      console.log(`RUN ${JSON.stringify(brief)}`);
      await sleep(500);
    }
  }
}
if (env('NET_FRAMES')) {
  // Per frame: wire to receive and wire to display, every run.
  const lines = ['condition\ttarget\trun\tframe\twire_to_receive_ms\twire_to_display_ms'];
  for (const r of results) for (const [n, recv, disp] of r.lat || []) lines.push(`${r.condition}\t${r.target}\t${r.run}\t${n}\t${recv.toFixed(2)}\t${disp.toFixed(2)}`);
  writeFileSync(env('NET_FRAMES'), `${lines.join('\n')}\n`);
}

// Tables: medians over runs for the matrix; all frames of all runs pooled for latency.
const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');
const targets = TARGETS.map((t) => t.name);
console.log('\n| condition | target | frames decoded | freezes | frozen ms | first frame ms | lost after repair | packets | NACKs | RTX received | FEC received |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|');
for (const condition of CONDITIONS) {
  for (const name of targets) {
    const rows = results.filter((r) => r.condition === condition && r.target === name && !r.error);
    if (!rows.length) continue;
    const m = (k, scale = 1) => median(rows.map((r) => (r[k] ?? NaN) * scale));
    const runs = (k, scale = 1) => rows.map((r) => f0((r[k] ?? NaN) * scale)).join('; ');
    console.log(`| ${condition} | ${name} | ${runs('framesDecoded')} | ${runs('freezeCount')} | ${runs('totalFreezesDuration', 1000)} | ${runs('firstFrame')} | ${f0(m('packetsLost'))} | ${f0(m('packetsReceived'))} | ${f0(m('nackCount'))} | ${f0(m('retransmittedPacketsReceived'))} | ${f0(m('fecPacketsReceived'))} |`);
  }
}
console.log('\n| condition | target | frames timed | wire to receive p50 / p95 ms | wire to display p50 / p95 ms |');
console.log('|---|---|---|---|---|');
for (const condition of CONDITIONS.filter((c) => LATENCY.includes(c))) {
  for (const name of targets) {
    const rows = results.filter((r) => r.condition === condition && r.target === name && !r.error);
    if (!rows.length) continue;
    const recv = rows.flatMap((r) => r.recv);
    const disp = rows.flatMap((r) => r.disp);
    console.log(`| ${condition} | ${name} | ${recv.length} | ${pct(recv, 50).toFixed(1)} / ${pct(recv, 95).toFixed(1)} | ${pct(disp, 50).toFixed(1)} / ${pct(disp, 95).toFixed(1)} |`);
  }
}
const errors = results.filter((r) => r.error);
for (const e of errors) console.log(`ERROR ${e.condition} ${e.target} run ${e.run}: ${e.error}`);
