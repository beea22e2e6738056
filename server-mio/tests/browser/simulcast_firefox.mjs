// Simulcast from a stack no one here wrote: headless Firefox (its fake camera, VP8, since it
// has no H.264 here) publishes three layers through the publish page over WHIP; Chromium
// watches: a clean viewer climbs to the largest layer Firefox sends, the quality menu fixes the
// smallest; a Firefox viewer climbs to the largest on its own estimate, then switches from it
// to the smallest at the menu and plays on. Firefox's offer lists its RIDs and sends its layers its own way; the server ranks
// them by the picture each carries. Runs in the loopback-only namespace the caller made, plus
// a veth pair with a test address for Firefox (it gathers no ICE candidate on loopback alone).
//
// Environment: ITG_SERVER_BIN, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, sleep, env, start, until, CHROMIUM_ARGS, launchFirefox } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const HTTP = 'http://127.0.0.1:18410';
const ADDR = '10.79.1.1';

async function streamInfo() {
  const r = await fetch(`${HTTP}/api/streams`);
  return (await r.json()).streams.find((s) => s.channel === 78 && s.live);
}

let browser;
let firefox;
let error;
const pages = [];
const dataDir = mkdtempSync(join(tmpdir(), 'itg-simulcast-ff-'));
const summary = {};
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  execFileSync('ip', ['link', 'add', 'itgsf0', 'type', 'veth', 'peer', 'name', 'itgsf1']);
  execFileSync('ip', ['addr', 'add', `${ADDR}/24`, 'dev', 'itgsf0']);
  execFileSync('ip', ['link', 'set', 'itgsf0', 'up']);
  execFileSync('ip', ['link', 'set', 'itgsf1', 'up']);
  const key = execFileSync(SERVER, ['keys', 'add', '--data-dir', dataDir, '--channel', '78', '--name', 'Firefox layers'])
    .toString().trim().split('\n').pop();
  start(SERVER, ['--http-port', '18410', '--ftl-port', '18414', '--webrtc-port', '20410',
    '--media-ports', '19420-19430', '--data-dir', dataDir], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTP}/api/streams`)).ok);

  firefox = await launchFirefox(puppeteer, {
    'media.navigator.streams.fake': true,
    'media.navigator.permission.disabled': true,
    // Firefox gathers no candidate for a page on 127.0.0.1, and the test address is no secure
    // context: the camera is allowed there for the test.
    'media.devices.insecure.enabled': true,
    'media.getusermedia.insecure.enabled': true,
  });
  const publisher = await firefox.newPage();
  publisher.on('console', (m) => process.stderr.write(`[firefox publish] ${m.text()}\n`));
  summary.firefox = await firefox.version();
  await publisher.goto(`http://${ADDR}:18410/publish/78`);
  await publisher.select('#resolution', '1280x720');
  await publisher.select('#codec', 'VP8');
  await publisher.select('#layers', process.env.LAYERS || '3');
  await publisher.type('#key', key);
  await publisher.click('#go');
  await publisher.waitForFunction(() => document.body.dataset.state === 'live', { timeout: 20000 })
    .catch(async (e) => {
      const why = await publisher.evaluate(async () => {
        const pc = window.itgPublisher.pc;
        const lines = [];
        if (pc) {
          const report = await pc.getStats();
          report.forEach((r) => {
            if (/candidate/.test(r.type)) lines.push(`${r.type} ${r.address || ''}:${r.port || ''} ${r.state || ''} ${r.candidateType || ''}`);
          });
          lines.push((pc.localDescription?.sdp || '').split('\r\n').filter((l) => /candidate|simulcast|rid/.test(l)).join(' | '));
          lines.push((pc.remoteDescription?.sdp || '').split('\r\n').filter((l) => /candidate|simulcast|rid/.test(l)).join(' | '));
        }
        return `${document.getElementById('status').textContent} ${lines.join(' ; ')}`;
      });
      throw new Error(`Firefox did not go live: ${why} (${e.message})`);
    });
  let info = null;
  await until('Firefox\'s layers', 30000, async () => {
    info = await streamInfo();
    return info?.codec === 'VP8' && info.layers?.length === 3 && info.layers.every((l) => l.active && l.height);
  }).catch(() => { throw new Error(`layers: ${JSON.stringify(info?.layers)}`); });
  const widths = info.layers.map((l) => l.width);
  summary.layers = info.layers.map((l) => ({ id: l.id, size: `${l.width}x${l.height}`, kbps: Math.round(l.bitrate_bps / 1000) }));
  console.error(`Firefox layers: ${JSON.stringify(summary.layers)}`);
  if (!(widths[0] < widths[1] && widths[1] < widths[2])) throw new Error(`layers not three sizes: ${widths}`);

  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const watch = async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    pages.push(page);
    await page.goto(`${HTTP}/watch/78`);
    await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 10, null, { timeout: 20000 });
    return page;
  };
  const width = (page) => page.evaluate(() => document.getElementById('video').videoWidth);
  const clean = await watch();
  await until('the clean viewer on the largest layer', 20000, async () => (await width(clean)) === widths[2]);
  const chooser = await watch();
  await until('the quality menu', 5000, () => chooser.evaluate(() => !document.getElementById('quality-box').hidden));
  await chooser.selectOption('#quality', String(info.layers[0].id));
  await until('the chosen smallest layer', 10000, async () => (await width(chooser)) === widths[0]);
  // Firefox watches too, from a network the server has not seen: it starts on the middle
  // layer and its own transport-wide feedback drives the estimate that takes it to the largest
  // through a trial; then it switches from the largest to the smallest at the menu (VP8
  // keyframes of another layer, whose picture IDs the server makes run on: without that
  // Firefox stalled ~2.5 s after the first frames of the new layer).
  const trialsBefore = (await streamInfo()).layer_trials;
  const ffWatch = await firefox.newPage();
  const ffOpened = Date.now();
  await ffWatch.goto(`http://${ADDR}:18410/watch/78`);
  await ffWatch.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 10, { timeout: 20000 });
  const ffAnswer = await ffWatch.evaluate(() => window.itg.player.pc.remoteDescription.sdp);
  if (!/transport-wide-cc-extensions-01/.test(ffAnswer)) throw new Error(`no transport-wide feedback for Firefox:\n${ffAnswer}`);
  summary.firefoxViewerFirstWidth = await ffWatch.evaluate(() => document.getElementById('video').videoWidth);
  await ffWatch.waitForFunction((w) => document.getElementById('video').videoWidth === w, { timeout: 30000 }, widths[2])
    .catch(async () => { throw new Error(`the Firefox viewer stayed at ${await ffWatch.evaluate(() => document.getElementById('video').videoWidth)}`); });
  summary.firefoxViewerTopAfterMs = Date.now() - ffOpened;
  summary.firefoxViewerTrials = (await streamInfo()).layer_trials - trialsBefore;
  if (summary.firefoxViewerFirstWidth !== widths[1]) throw new Error(`the Firefox viewer started at ${summary.firefoxViewerFirstWidth}, not the middle`);
  if (summary.firefoxViewerTrials < 1) throw new Error('the Firefox viewer climbed without a trial (no estimate)');
  await ffWatch.waitForFunction(() => !document.getElementById('quality-box').hidden, { timeout: 5000 });
  await ffWatch.select('#quality', String(info.layers[0].id));
  await ffWatch.waitForFunction((w) => document.getElementById('video').videoWidth === w, { timeout: 10000 }, widths[0]);
  const decoded = await ffWatch.evaluate(() => window.itg.stats.framesDecoded);
  await sleep(2000);
  const later = await ffWatch.evaluate(() => window.itg.stats.framesDecoded);
  if (later - decoded < 20) throw new Error(`Firefox decoded ${later - decoded} frames in 2 s after the switch`);
  summary.firefoxViewerFramesIn2s = later - decoded;
  info = await streamInfo();
  summary.layers = info.layers.map((l) => ({ id: l.id, size: `${l.width}x${l.height}`, kbps: Math.round(l.bitrate_bps / 1000), viewers: l.viewers }));
  summary.clean = await width(clean);
  summary.chosen = await width(chooser);
  await clean.screenshot({ path: join(ARTIFACTS, 'simulcast-firefox-clean.png') });
  writeFileSync(join(ARTIFACTS, 'simulcast-firefox-summary.json'), JSON.stringify(summary, null, 2));
  console.log(JSON.stringify(summary));
} catch (e) {
  error = e;
  console.error(`Firefox simulcast test failed: ${e.stack || e}`);
  for (const [i, page] of pages.entries()) {
    await page.screenshot({ path: join(ARTIFACTS, `simulcast-firefox-${i}-failed.png`) }).catch(() => {});
  }
} finally {
  if (browser) await browser.close().catch(() => {});
  if (firefox) await firefox.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  await sleep(300);
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(error ? 1 : 0);
