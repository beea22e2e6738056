// Pion (Go's WebRTC stack, github.com/pion/webrtc/v3 3.1.56 as Debian 12 packages it, through
// tests/pion/itg_pion.go) against the real server, inside the loopback-only namespace the
// caller made:
//
// - it watches an FTL stream (our client, the fixture) over WHEP: its H.264 written out
//   decodes in ffprobe at 320x180, frame for frame, with the Opus;
// - a wrong key is refused with 401;
// - it publishes 640x360 H.264 + Opus over WHIP with its default media engine, whose offer
//   lists VP8 first and every other codec Pion knows: the stream is H.264 (the answer names
//   it first); Chromium's watch page and a Pion viewer play it; the publisher stays live for
//   its 22 s (Pion sends no ICE binding request while media flows both ways: the server makes
//   them, or str0m's ICE-lite would let the pair go at 15 s);
// - it publishes VP8 with the same offer: the answer names VP8 too, so Pion's VP8 track
//   starts, and the stream is VP8 (the codec its first video packet came in); a Pion viewer
//   offering VP8 decodes it at 640x360, Chromium's watch page plays it, and a viewer offering
//   H.264 alone is refused with 406 naming VP8;
// - it watches a simulcast (our WHIP client's three H.264 layers): it starts on the middle
//   layer and climbs to the top on the estimate its own transport-wide feedback drives, its
//   file decoding across the switch.
//
// Pion keeps its own defaults: full ICE (controlling, its own consent checks), an ECDSA
// certificate, NACK, reports and transport-wide feedback from the viewer.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_WHIP_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO,
// ITG_VIDEO_160, ITG_VIDEO_640, ITG_PION, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, until, sleep, start, children, serveLiveChannel, finish, CHROMIUM_ARGS } from './lib.mjs';

const ARTIFACTS = env('ITG_ARTIFACTS');
const PION = env('ITG_PION');
const SERVER = env('ITG_SERVER_BIN');

/** Runs the Pion client; resolves with its JSON line and exit code. */
function pion(mode, url, args, seconds) {
  return new Promise((resolve, reject) => {
    const p = spawn(PION, [mode, '--url', url, '--seconds', String(seconds), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(p);
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => process.stderr.write(`[pion ${mode}] ${d}`));
    p.on('close', (code) => {
      try {
        resolve({ code, ...JSON.parse(out.trim().split('\n').pop()) });
      } catch (_) {
        reject(new Error(`pion ${mode} printed no result (exit ${code}): ${out}`));
      }
    });
  });
}

/** What ffprobe decodes of a file: codec, frames, and the first frame's size. */
function probe(file) {
  const s = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0',
    '-show_entries', 'stream=codec_name,nb_read_frames', '-of', 'json', file]).toString()).streams[0] || {};
  const f = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-read_intervals', '%+#1',
    '-show_entries', 'frame=width,height', '-of', 'json', file]).toString()).frames[0] || {};
  return { codec: s.codec_name, frames: Number(s.nb_read_frames || 0), width: f.width, height: f.height };
}

/** The width of every frame ffprobe decodes of a file, in order. */
function widths(file) {
  return execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'frame=width', '-of', 'csv=p=0', file])
    .toString().split('\n').map((l) => Number(l.trim().replace(/,$/, ''))).filter((w) => w > 0);
}

let error;
let browser;
const dir = mkdtempSync(join(tmpdir(), 'itg-pion-'));
const summary = {};
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  // Media Pion's readers take: Opus with one packet a page, VP8 in IVF.
  const audio = join(dir, 'audio.ogg');
  const vp8 = join(dir, 'video.ivf');
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '4',
    '-c:a', 'libopus', '-b:a', '64k', '-page_duration', '20000', audio]);
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-t', '4',
    '-c:v', 'libvpx', '-deadline', 'realtime', '-b:v', '800k', '-g', '30', vp8]);

  // Channel 77 carries our FTL client's fixture; 78 and 79 are for Pion's WHIP.
  const HTTP = await serveLiveChannel({ dir, http: 18500, ftl: 18504, webrtc: 20500, media: '19500-19510' });
  const addKey = (c) => execFileSync(SERVER, ['keys', 'add', '--data-dir', `${dir}/data`, '--channel', String(c), '--name', `Pion ${c}`])
    .toString().trim().split('\n').pop();
  const key78 = addKey(78);
  const key79 = addKey(79);
  const key80 = addKey(80);
  const streams = async () => (await (await fetch(`${HTTP}/api/streams`)).json()).streams;
  await until('the new channels', 5000, async () => (await streams()).some((s) => s.channel === 79));

  // Pion watches the FTL stream.
  const ftlFile = join(dir, 'ftl.h264');
  const watchFtl = await pion('watch', `${HTTP}/whep/77`, ['--out', ftlFile], 6);
  watchFtl.decoded = probe(ftlFile);
  summary.watch_ftl = watchFtl;
  if (watchFtl.code !== 0 || watchFtl.codec !== 'h264' || watchFtl.decoded.width !== 320 || watchFtl.decoded.height !== 180
    || watchFtl.decoded.frames < 150 || watchFtl.decoded.frames < watchFtl.frames - 2 || watchFtl.keyframes < 1
    || watchFtl.audio_packets < 200 || watchFtl.seq_gaps !== 0) {
    throw new Error(`Pion as a WHEP viewer of an FTL stream: ${JSON.stringify(watchFtl)}`);
  }

  // A wrong key: 401.
  const wrong = await pion('publish', `${HTTP}/whip/78`, ['--key', '78-wrong', '--video', env('ITG_VIDEO_640'), '--audio', audio], 2);
  summary.wrong_key = { code: wrong.code, status: wrong.status, error: wrong.error };
  if (wrong.code === 0 || wrong.status !== 401) throw new Error(`a wrong key: ${JSON.stringify(wrong)}`);

  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  summary.chromium = browser.version();
  /** Chromium's watch page on `channel`, until it has decoded 60 frames at 640x360 with sound. */
  const watchPage = async (channel) => {
    const page = await browser.newPage();
    page.on('console', (m) => process.stderr.write(`[watch ${channel}] ${m.text()}\n`));
    try {
      await page.goto(`${HTTP}/watch/${channel}`);
      await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) >= 60
        && window.itg.stats.width === 640 && window.itg.stats.height === 360
        && (window.itg.stats.audioPackets || 0) > 20, null, { timeout: 20000 })
        .catch(async () => { throw new Error(`watch page ${channel}: ${JSON.stringify(await page.evaluate(() => window.itg?.stats))}`); });
      const s = await page.evaluate(() => ({ ...window.itg.stats, firstFrameMs: window.itg.firstFrameMs }));
      await page.screenshot({ path: join(ARTIFACTS, `pion-watch-${channel}.png`) });
      return { frames: s.framesDecoded, width: s.width, height: s.height, audio_packets: s.audioPackets };
    } finally {
      await page.close();
    }
  };

  const metric = async (re) => Number((re.exec(await (await fetch(`${HTTP}/metrics`)).text()) || [])[1] || 0);
  for (const [channel, key, video, codec] of [[78, key78, env('ITG_VIDEO_640'), 'h264'], [79, key79, vp8, 'vp8']]) {
    const keepalivesBefore = await metric(/^itg_ice_keepalives_total (\d+)/m);
    const began = Date.now();
    let publishing = pion('publish', `${HTTP}/whip/${channel}`, ['--key', key, '--video', video, '--audio', audio], 22);
    await until(`channel ${channel} live over WHIP`, 10000, async () => (await streams())
      .some((s) => s.channel === channel && s.live && s.protocol === 'whip' && s.width === 640));
    const info = (await streams()).find((s) => s.channel === channel && s.live);
    // How long the stream stays live: Pion sends no binding request while media flows, and
    // str0m's ICE-lite lets a pair go after 15 s without one unless the server makes them.
    let lastLive = 0;
    let done = false;
    publishing = publishing.finally(() => { done = true; });
    const watching = (async () => {
      while (!done) {
        if ((await streams()).some((s) => s.channel === channel && s.live)) lastLive = Date.now() - began;
        await sleep(500);
      }
    })();
    const page = await watchPage(channel);
    const file = join(dir, `${channel}.${codec === 'vp8' ? 'ivf' : 'h264'}`);
    const watched = await pion('watch', `${HTTP}/whep/${channel}`, ['--codec', codec, '--out', file], 8);
    watched.decoded = probe(file);
    const result = { stream: { codec: info.codec, codecs: info.codecs, width: info.width, height: info.height }, watch_page: page, viewer: watched };
    if (codec === 'vp8') {
      // A viewer that takes H.264 alone is told the stream is VP8.
      result.h264_viewer = await pion('watch', `${HTTP}/whep/${channel}`, ['--codec', 'h264'], 2);
    }
    result.publisher = await publishing;
    await watching;
    result.live_until_ms = lastLive;
    result.keepalives = (await metric(/^itg_ice_keepalives_total (\d+)/m)) - keepalivesBefore;
    summary[`publish_${codec}`] = result;
    const want = codec === 'vp8' ? 'VP8' : 'H264';
    if (result.publisher.code !== 0 || result.publisher.codec !== codec || result.publisher.frames_sent < 600) {
      throw new Error(`Pion as a WHIP publisher of ${want}: ${JSON.stringify(result.publisher)}`);
    }
    if (info.codec !== want || !info.codecs.includes('opus')) throw new Error(`the server saw ${JSON.stringify(result.stream)}`);
    // Live to the end (22 s), well past 15 s; requests were made for the publisher and its
    // Pion viewer (one each every 7 s once they stopped asking).
    if (!(lastLive > 19000)) throw new Error(`channel ${channel} was live only ${lastLive} ms of 22 s`);
    if (result.keepalives < 3) throw new Error(`${result.keepalives} binding requests made for the Pion peers`);
    if (watched.code !== 0 || watched.codec !== codec || watched.decoded.codec !== codec || watched.decoded.width !== 640
      || watched.decoded.height !== 360 || watched.decoded.frames < 200 || watched.decoded.frames < watched.frames - 2
      || watched.audio_packets < 300 || watched.seq_gaps !== 0) {
      throw new Error(`Pion watching Pion's ${want}: ${JSON.stringify(watched)}`);
    }
    if (result.h264_viewer && !(result.h264_viewer.code !== 0 && result.h264_viewer.status === 406 && /VP8/.test(result.h264_viewer.error))) {
      throw new Error(`an H.264-only viewer of a VP8 stream: ${JSON.stringify(result.h264_viewer)}`);
    }
  }

  // A simulcast: our WHIP client's three layers on channel 80; Pion watches.
  start(env('ITG_WHIP_CLIENT_BIN'), ['--url', `${HTTP}/whip/80`, '--key', key80, '--layer', `q=${env('ITG_VIDEO_160')}`,
    '--layer', `h=${env('ITG_VIDEO')}`, '--layer', `f=${env('ITG_VIDEO_640')}`, '--audio', env('ITG_AUDIO'), '--loop'], 'whip-client');
  await until('channel 80 with three layers', 10000, async () => (await streams())
    .some((s) => s.channel === 80 && s.live && (s.layers || []).filter((l) => l.width).length === 3));
  const simFile = join(dir, 'simulcast.h264');
  const sim = await pion('watch', `${HTTP}/whep/80`, ['--out', simFile], 25);
  const sizes = widths(simFile);
  const stream80 = (await streams()).find((s) => s.channel === 80 && s.live);
  const climbedAt = sizes.indexOf(640);
  summary.simulcast = { viewer: sim, frames_decoded: sizes.length, first_width: sizes[0], last_width: sizes[sizes.length - 1],
    top_from_frame: climbedAt, layer_switches: stream80?.layer_switches, layer_trials: stream80?.layer_trials };
  if (sim.code !== 0 || sim.seq_gaps !== 0 || sizes.length < sim.frames - 2 || sizes.length < 500
    || sizes[0] !== 320 || climbedAt < 0 || sizes.slice(climbedAt).some((w) => w !== 640) || !(stream80?.layer_switches >= 1)) {
    throw new Error(`Pion watching a simulcast: ${JSON.stringify(summary.simulcast)}`);
  }
  console.error(`PION ${JSON.stringify(summary)}`);
} catch (e) {
  error = e;
} finally {
  writeFileSync(join(ARTIFACTS, 'pion-summary.json'), JSON.stringify({ error: error ? String(error) : null, ...summary }, null, 2));
  await finish({ error, name: 'Pion test', browser, dir, artifacts: ARTIFACTS });
  await sleep(100);
  process.exit(process.exitCode || 0);
}
