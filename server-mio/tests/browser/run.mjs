// Headless Chromium plays the watch page against the real server, inside the loopback-only
// network namespace the caller made (`unshare -n`). Streams a fixture with the project's FTL
// client, checks decoding, the picture size and audio, then offline and back.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_VIDEO_BFRAMES (fixtures),
// ITG_ARTIFACTS (where the screenshot and the summary go), ITG_RUNS (page loads to time).
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { children, sleep, env, start, until, CHROMIUM_ARGS } from './lib.mjs';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SERVER = env('ITG_SERVER_BIN');
const CLIENT = env('ITG_CLIENT_BIN');
const VIDEO = env('ITG_VIDEO');
const AUDIO = env('ITG_AUDIO');
const VIDEO_BFRAMES = env('ITG_VIDEO_BFRAMES');
const ARTIFACTS = env('ITG_ARTIFACTS');
const RUNS = Number(process.env.ITG_RUNS || 5);
const HTTP = 'http://127.0.0.1:18080';
async function isLive() {
  const r = await fetch(`${HTTP}/api/streams`);
  return (await r.json()).streams.some((s) => s.channel === 77 && s.live);
}

function streamFixture(key, video = VIDEO) {
  return start(CLIENT, ['--server', '127.0.0.1:18084', '--key', key, '--video', video, '--audio', AUDIO, '--loop'], 'ftl-client');
}

const noticeShown = (page) => page.evaluate(() => !document.getElementById('notice').hidden);

/// Frames decoded over `ms` milliseconds.
async function decodedOver(page, ms) {
  const a = await frames(page);
  await sleep(ms);
  return (await frames(page)) - a;
}

async function stopClient(p) {
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await done;
}

const frames = (page) => page.evaluate(() => window.itg?.stats?.framesDecoded || 0);

let browser;
let page;
const dataDir = mkdtempSync(join(tmpdir(), 'itg-browser-'));
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const key = execFileSync(SERVER, ['keys', 'add', '--data-dir', dataDir, '--channel', '77', '--name', 'Browser test'])
    .toString().trim().split('\n').pop();
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18080', '--ftl-port', '18084', '--webrtc-port', '20000',
    '--media-ports', '19000-19010', '--data-dir', dataDir], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTP}/api/streams`)).ok);
  let client = streamFixture(key);
  await until('the stream to go live', 10000, isLive);

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
  });
  // Time from page open to the first decoded frame, over several fresh page loads.
  const firstFrame = [];
  for (let i = 0; i < RUNS; i++) {
    if (page) await page.close();
    page = await browser.newPage({ viewport: { width: 960, height: 700 } });
    page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
    await page.goto(`${HTTP}/watch/77`);
    await page.waitForFunction(() => window.itg?.firstFrameMs !== null && window.itg?.firstFrameMs !== undefined, null, { timeout: 15000 });
    firstFrame.push(Math.round(await page.evaluate(() => window.itg.firstFrameMs)));
  }
  // Frames keep coming, at the fixture's size, with audio.
  const f0 = await frames(page);
  await sleep(2000);
  const f1 = await frames(page);
  if (!(f1 > f0 + 20)) throw new Error(`frames did not grow: ${f0} -> ${f1}`);
  const size = await page.evaluate(() => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
  if (size[0] !== 320 || size[1] !== 180) throw new Error(`video size ${size}, expected 320x180`);
  const audio = await page.evaluate(() => window.itg.stats.audioPackets);
  if (!(audio > 20)) throw new Error(`only ${audio} audio packets`);
  await page.click('#toggle-stats');
  await sleep(1200);
  await page.screenshot({ path: join(ARTIFACTS, 'watch.png') });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state !== 'playing') throw new Error(`page state ${state}, expected playing`);

  // The stream stops: the page says offline.
  await stopClient(client);
  await page.waitForFunction(() => document.body.dataset.state === 'offline', null, { timeout: 15000 });
  await page.screenshot({ path: join(ARTIFACTS, 'offline.png') });
  // It comes back: frames flow again without a reload.
  const before = await frames(page);
  client = streamFixture(key);
  await page.waitForFunction((b) => (window.itg?.stats?.framesDecoded || 0) > b + 30, before, { timeout: 20000 });
  await page.waitForFunction(() => document.body.dataset.state === 'playing', null, { timeout: 10000 });
  await sleep(2500);
  if (await noticeShown(page)) throw new Error('the B-frames notice shows for a stream without them');
  const plainFrames = await decodedOver(page, 3000);

  // An encoder with B-frames: the page says why the picture stutters.
  await stopClient(client);
  await page.waitForFunction(() => document.body.dataset.state === 'offline', null, { timeout: 15000 });
  client = streamFixture(key, VIDEO_BFRAMES);
  await page.waitForFunction(() => !document.getElementById('notice').hidden, null, { timeout: 10000 });
  const text = await page.evaluate(() => document.getElementById('notice').textContent);
  if (!/B-frames/.test(text) || !/bframes=0/.test(text)) throw new Error(`notice says ${text}`);
  await sleep(1000);
  const bFrames = await decodedOver(page, 3000);
  await page.screenshot({ path: join(ARTIFACTS, 'b-frames.png') });
  await stopClient(client);
  await page.waitForFunction(() => document.body.dataset.state === 'offline', null, { timeout: 15000 });
  if (await noticeShown(page)) throw new Error('the B-frames notice outlived its stream');
  client = streamFixture(key);
  await page.waitForFunction(() => document.body.dataset.state === 'playing', null, { timeout: 20000 });

  // The home page lists the channel as live.
  const home = await browser.newPage();
  await home.goto(HTTP);
  await home.waitForSelector('.channel.live', { timeout: 10000 });
  await home.screenshot({ path: join(ARTIFACTS, 'home.png') });

  // A phone-sized screen gets the whole picture, and the unmute control works.
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.goto(`${HTTP}/watch/77`);
  await phone.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 10, null, { timeout: 15000 });
  const fits = await phone.evaluate(() => {
    const r = document.getElementById('video').getBoundingClientRect();
    return r.width > 300 && r.right <= window.innerWidth + 1;
  });
  if (!fits) throw new Error('the video does not fit a phone-sized screen');
  await phone.click('#unmute');
  if (await phone.evaluate(() => document.getElementById('video').muted)) throw new Error('unmute did not unmute');
  await phone.screenshot({ path: join(ARTIFACTS, 'phone.png') });

  const sorted = [...firstFrame].sort((a, b) => a - b);
  const summary = { first_frame_ms: firstFrame, median_first_frame_ms: sorted[Math.floor(sorted.length / 2)], video: size, audio_packets: audio,
    decoded_in_3s: { without_b_frames: plainFrames, with_b_frames: bFrames } };
  writeFileSync(join(ARTIFACTS, 'summary.json'), JSON.stringify(summary, null, 2));
  console.log(`browser test passed: ${JSON.stringify(summary)}`);
  await stopClient(client);
} catch (e) {
  console.error(`browser test FAILED: ${e.stack || e}`);
  if (page) {
    const diag = await page.evaluate(() => ({
      state: document.body.dataset.state,
      overlay: document.getElementById('overlay')?.textContent,
      player: window.itg?.player?.state,
      pc: window.itg?.player?.pc?.connectionState,
      ice: window.itg?.player?.pc?.iceConnectionState,
      stats: window.itg?.stats,
    })).catch((err) => `unavailable: ${err}`);
    console.error(`page at failure: ${JSON.stringify(diag)}`);
    await page.screenshot({ path: join(ARTIFACTS, 'failure.png') }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}
