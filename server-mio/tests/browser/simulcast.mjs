// Simulcast: headless Chromium publishes three layers (1280x720, 640x360, 320x180) through
// the publish page over WHIP, inside the loopback-only namespace the caller made. A clean
// viewer climbs to the top layer; a viewer choosing the smallest in the quality menu gets it;
// a viewer whose link nftables polices below the top layer's rate moves down within 5 s,
// then plays for 20 s without a freeze over 300 ms and without trying the top layer again
// (its layer follows a bandwidth estimate from transport-wide feedback, with probes), and
// climbs back when the limit is lifted; GStreamer's webrtcbin, a viewer from a network the
// server has not seen, starts on the middle layer, climbs to the top on the estimate its own
// transport-wide feedback drives, then takes the smallest layer asked for through the WHEP
// layer extension; the recording has the top layer.
//
// Environment: ITG_SERVER_BIN, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, sleep, env, start, until, CHROMIUM_ARGS, publishLayers, gstreamer } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const HTTP = 'http://127.0.0.1:18400';
const GST = new URL('../gst/itg_gst.py', import.meta.url).pathname;
const nft = (...args) => execFileSync('nft', args);

async function streamInfo() {
  const r = await fetch(`${HTTP}/api/streams`);
  return (await r.json()).streams.find((s) => s.channel === 77 && s.live);
}

/** A watch page with a frame clock: the longest gap between shown frames since `mark()`. */
async function watch(browser, name) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('console', (m) => process.stderr.write(`[${name}] ${m.text()}\n`));
  await page.goto(`${HTTP}/watch/77`);
  await page.evaluate(() => {
    const v = document.getElementById('video');
    window.gaps = { last: 0, max: 0, at: 0, from: 0 };
    const tick = (now) => {
      if (window.gaps.last && now - window.gaps.last > window.gaps.max) {
        window.gaps.max = now - window.gaps.last;
        window.gaps.at = Math.round(window.gaps.last - window.gaps.from);
      }
      window.gaps.last = now;
      v.requestVideoFrameCallback(tick);
    };
    v.requestVideoFrameCallback(tick);
  });
  await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 10, null, { timeout: 20000 });
  return page;
}
const width = (page) => page.evaluate(() => document.getElementById('video').videoWidth);
const mark = (page) => page.evaluate(() => {
  window.gaps.max = 0; window.gaps.last = 0; window.gaps.at = 0; window.gaps.from = performance.now();
});
/** When the longest gap since `mark()` began, in ms after the mark. */
const maxGapAt = (page) => page.evaluate(() => window.gaps.at);
const maxGap = (page) => page.evaluate(() => window.gaps.max);
/** The viewer's local UDP port (its nominated candidate pair). */
const localPort = (page) => page.evaluate(async () => {
  const report = await window.itg.player.pc.getStats();
  let pair = null;
  const locals = {};
  report.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    if (s.type === 'local-candidate') locals[s.id] = s.port;
  });
  return pair ? locals[pair.localCandidateId] : null;
});

let browser;
const pages = {};
const dataDir = mkdtempSync(join(tmpdir(), 'itg-simulcast-'));
const summary = {};
let error;
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const key = execFileSync(SERVER, ['keys', 'add', '--data-dir', dataDir, '--channel', '77', '--name', 'Simulcast test'])
    .toString().trim().split('\n').pop();
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18400', '--ftl-port', '18404', '--webrtc-port', '20400',
    '--media-ports', '19400-19410', '--data-dir', dataDir, '--record'], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTP}/api/streams`)).ok);

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  const publisher = await publishLayers(browser, HTTP, 77, key);
  let info = null;
  await until('three layers sending', 30000, async () => {
    info = await streamInfo();
    return info?.layers?.length === 3 && info.layers.every((l) => l.active && l.height);
  }).catch(() => { throw new Error(`layers: ${JSON.stringify(info?.layers)}`); });
  const heights = info.layers.map((l) => l.height);
  console.error(`layers: ${JSON.stringify(info.layers)}`);
  if (JSON.stringify(heights) !== JSON.stringify([180, 360, 720])) throw new Error(`layer heights ${heights}`);
  const [small, , top] = info.layers;
  summary.layers = info.layers.map((l) => ({ height: l.height, kbps: Math.round(l.bitrate_bps / 1000) }));

  // A clean viewer starts on the middle layer and climbs to the top.
  const opened = Date.now();
  pages.clean = await watch(browser, 'clean viewer');
  summary.cleanFirstFrameMs = Date.now() - opened;
  await until('the clean viewer on the top layer', 20000, async () => (await width(pages.clean)) === 1280);
  summary.cleanTopAfterMs = Date.now() - opened;

  // The quality menu: the smallest layer, then back to auto.
  pages.chooser = await watch(browser, 'chooser');
  await until('the quality menu', 5000, () => pages.chooser.evaluate(() => !document.getElementById('quality-box').hidden));
  await pages.chooser.selectOption('#quality', String(small.id));
  await until('the chosen smallest layer', 8000, async () => (await width(pages.chooser)) === 320);
  await mark(pages.chooser);
  await sleep(2000);
  summary.chooserGapMs = Math.round(await maxGap(pages.chooser));
  if ((await width(pages.chooser)) !== 320) throw new Error('the chosen layer did not hold');

  // A viewer whose link is policed below the top layer's rate.
  pages.limited = await watch(browser, 'limited viewer');
  await until('the limited viewer on the top layer first', 20000, async () => (await width(pages.limited)) === 1280);
  await sleep(3000); // watching for a while before its link narrows
  // Its layer follows a bandwidth estimate: the answer negotiated transport-wide feedback,
  // and the server counts every viewer of this simulcast stream as estimating.
  const answer = await pages.limited.evaluate(() => window.itg.player.pc.remoteDescription.sdp);
  if (!/a=extmap:\d+ http:\/\/www\.ietf\.org\/id\/draft-holmer-rmcat-transport-wide-cc-extensions-01/.test(answer)
    || !/a=rtcp-fb:\d+ transport-cc/.test(answer)) {
    throw new Error(`no transport-wide feedback in the answer:\n${answer}`);
  }
  summary.estimatingViewers = (await streamInfo()).estimating_viewers;
  if (summary.estimatingViewers !== 3) throw new Error(`estimating viewers ${summary.estimatingViewers}`);
  const port = await localPort(pages.limited);
  if (!port) throw new Error('no candidate pair on the limited viewer');
  const now = await streamInfo();
  const topKbps = Math.round(now.layers[2].bitrate_bps / 1000);
  summary.layers = now.layers.map((l) => ({ height: l.height, kbps: Math.round(l.bitrate_bps / 1000) }));
  console.error(`layers now: ${JSON.stringify(summary.layers)}`);
  // Half way between the middle and the top layer's rates: the middle layer and audio fit,
  // the top does not.
  const midKbps = summary.layers[1].kbps;
  if (topKbps < midKbps + 150) throw new Error(`the top layer is not much above the middle: ${JSON.stringify(summary.layers)}`);
  const limitKbps = Math.round((midKbps + topKbps) / 2 + 40);
  summary.limitKbps = limitKbps;
  nft('add', 'table', 'inet', 'itgsim');
  nft('add', 'chain', 'inet', 'itgsim', 'input', '{ type filter hook input priority 0; }');
  nft('add', 'rule', 'inet', 'itgsim', 'input', 'udp', 'dport', String(port), 'limit', 'rate', 'over',
    `${Math.round(limitKbps * 1000 / 8)} bytes/second`, 'burst', '6000 bytes', 'counter', 'drop');
  // The link narrows when the policer first drops (its bucket starts full).
  const dropped = () => {
    const m = /packets (\d+)/.exec(execFileSync('nft', ['list', 'chain', 'inet', 'itgsim', 'input']).toString());
    return m ? Number(m[1]) : 0;
  };
  const ruleAt = Date.now();
  await until('the policer to drop', 10000, async () => dropped() > 0);
  const limitedAt = Date.now();
  summary.policerFirstDropMs = limitedAt - ruleAt;
  await until('the limited viewer to move down', 5000, async () => (await width(pages.limited)) < 1280);
  summary.downAfterMs = Date.now() - limitedAt;
  summary.downTo = await width(pages.limited);
  await sleep(1000); // the switch's own keyframe
  await mark(pages.limited);
  // 20 s on the narrow link, longer than a viewer without an estimate waits before it tries
  // the layer above (10 s): this one probes instead and never goes back up while limited.
  const widths = new Set();
  for (const until = Date.now() + 20000; Date.now() < until;) {
    widths.add(await width(pages.limited));
    await sleep(250);
  }
  summary.limitedWidths = [...widths].sort((a, b) => a - b);
  summary.limitedGapMs = Math.round(await maxGap(pages.limited));
  summary.limitedGapAtMs = await maxGapAt(pages.limited);
  summary.limitedWidth = await width(pages.limited);
  console.error(`top layer ${topKbps} kbit/s, link ${limitKbps} kbit/s: down in ${summary.downAfterMs} ms to ${summary.downTo}, then longest gap ${summary.limitedGapMs} ms, widths ${summary.limitedWidths}`);
  if (summary.limitedGapMs > 300) throw new Error(`froze ${summary.limitedGapMs} ms on the lower layer`);
  if (widths.has(1280)) throw new Error(`back on the top layer while limited: widths ${summary.limitedWidths}`);
  nft('delete', 'table', 'inet', 'itgsim');
  const liftedAt = Date.now();
  await until('the viewer to climb back once the limit is lifted', 45000, async () => (await width(pages.limited)) === 1280);
  summary.upAfterLiftMs = Date.now() - liftedAt;

  // GStreamer's webrtcbin watches too, its WHEP requests from 127.0.0.2 (a network with no
  // remembered layer, so it starts on the middle one) with transport-wide feedback offered:
  // its RTP session's feedback drives the server's estimate, which takes it to the top layer
  // through a trial. Then it asks for the smallest layer (20 s after its first frame), and
  // for auto again (25 s), whose answer carries its estimate.
  const trialsBefore = (await streamInfo()).layer_trials;
  const gst = await gstreamer(GST, 'watch', `${HTTP}/whep/77`,
    ['--twcc', '--http-source', '127.0.0.2', '--choose', `20=${small.id}`, '--choose', '25=auto'], 30);
  const trials = (await streamInfo()).layer_trials - trialsBefore;
  summary.gstreamer = { frames: gst.frames, first_frame_ms: gst.first_frame_ms, sizes: gst.sizes, max_gap_ms: gst.max_gap_ms,
    answer_twcc: gst.answer_twcc, choices: gst.choices, trials, error: gst.error };
  console.error(`GStreamer viewer: ${JSON.stringify(summary.gstreamer)}`);
  if (gst.code !== 0 || !gst.answer_twcc) throw new Error(`GStreamer viewer: ${JSON.stringify(summary.gstreamer)}`);
  const sizes = gst.sizes || [];
  const [chosen, auto] = gst.choices || [];
  const topAt = sizes.find(([, w]) => w === 1280)?.[0];
  const smallAt = sizes.find(([at, w]) => w === 320 && chosen && at >= chosen.at_ms)?.[0];
  if (sizes[0]?.[1] !== 640) throw new Error(`GStreamer started at ${JSON.stringify(sizes[0])}, not on the middle layer`);
  if (!(topAt < chosen?.at_ms)) throw new Error(`GStreamer never reached the top layer on its estimate: ${JSON.stringify(sizes)}`);
  if (trials < 1) throw new Error('no trial: the climb did not come from an estimate');
  if (chosen?.status !== 200 || smallAt === undefined || smallAt - chosen.at_ms > 3000) {
    throw new Error(`GStreamer's choice of the smallest layer: ${JSON.stringify({ chosen, sizes })}`);
  }
  if (auto?.status !== 200 || !(auto.answer?.estimate_bps > 0)) throw new Error(`back to auto: ${JSON.stringify(auto)}`);
  // Every switch at a keyframe: the decoder never stalls for long.
  if (!(gst.max_gap_ms < 1000)) throw new Error(`GStreamer's picture stalled ${gst.max_gap_ms} ms`);

  info = await streamInfo();
  summary.layerViewers = info.layers.map((l) => l.viewers);
  summary.layerSwitches = info.layer_switches;
  if (info.layers[0].viewers !== 1) throw new Error(`viewers per layer ${summary.layerViewers}`);
  for (const [name, page] of Object.entries(pages)) await page.screenshot({ path: join(ARTIFACTS, `simulcast-${name}.png`) });

  // The recording is of the top layer.
  await publisher.click('#stop');
  await until('the stream to end', 10000, async () => !(await streamInfo()));
  await sleep(1000);
  const recDir = join(dataDir, 'recordings', '77');
  const files = readdirSync(recDir).filter((f) => f.endsWith('.mp4'));
  if (!files.length) throw new Error(`no recording in ${recDir}`);
  const probe = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries',
    'stream=width,height', '-of', 'json', join(recDir, files[0])]).toString());
  summary.recording = probe.streams[0];
  if (probe.streams[0].width !== 1280) throw new Error(`recorded ${JSON.stringify(probe.streams[0])}`);
  // Its poster is the top layer's first picture (scaled to the thumbnail width).
  const poster = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=width,height', '-of', 'json',
    join(recDir, files[0].replace('.mp4', '.jpg'))]).toString()).streams[0];
  summary.poster = poster;
  if (poster.width !== 640 || poster.height !== 360) throw new Error(`poster ${JSON.stringify(poster)}`);
  writeFileSync(join(ARTIFACTS, 'simulcast-summary.json'), JSON.stringify(summary, null, 2));
  console.log(JSON.stringify(summary));
} catch (e) {
  error = e;
  console.error(`simulcast test failed: ${e.stack || e}`);
  for (const [name, page] of Object.entries(pages)) {
    await page.screenshot({ path: join(ARTIFACTS, `simulcast-${name}-failed.png`) }).catch(() => {});
  }
} finally {
  try { nft('delete', 'table', 'inet', 'itgsim'); } catch (_) { /* gone already */ }
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  await sleep(300);
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(error ? 1 : 0);
