// Headless Chromium publishes its fake camera through the publish page (WHIP) to the real
// server, inside the loopback-only network namespace the caller made; a second page watches
// over WHEP. Checks decoding at the published size, audio, and that Stop ends the stream.
//
// Environment: ITG_SERVER_BIN, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, sleep, env, start, until, CHROMIUM_ARGS } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const HTTP = 'http://127.0.0.1:18090';

async function streamInfo() {
  const r = await fetch(`${HTTP}/api/streams`);
  return (await r.json()).streams.find((s) => s.channel === 77 && s.live);
}

let browser;
let publisher;
let watcher;
const dataDir = mkdtempSync(join(tmpdir(), 'itg-publish-'));
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const key = execFileSync(SERVER, ['keys', 'add', '--data-dir', dataDir, '--channel', '77', '--name', 'Publish test'])
    .toString().trim().split('\n').pop();
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18090', '--ftl-port', '18094', '--webrtc-port', '20010',
    '--media-ports', '19020-19030', '--data-dir', dataDir], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTP}/api/streams`)).ok);

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  publisher = await browser.newPage({ viewport: { width: 960, height: 760 } });
  publisher.on('console', (m) => process.stderr.write(`[publish page] ${m.text()}\n`));
  await publisher.goto(`${HTTP}/publish/77`);
  await publisher.fill('#key', key);
  await publisher.click('#go');
  await publisher.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 15000 });
  await until('the stream to go live over WHIP', 10000, async () => (await streamInfo())?.protocol === 'whip');
  // The page shows its bitrate once it is sending.
  await publisher.waitForFunction(() => Number(document.getElementById('status').dataset.kbps || 0) > 50, null, { timeout: 10000 });
  // What the encoder sends (it may start smaller than the camera and adapt).
  const sentSize = () => publisher.evaluate(() => {
    const d = document.getElementById('status').dataset;
    return [Number(d.width || 0), Number(d.height || 0)];
  });

  watcher = await browser.newPage({ viewport: { width: 960, height: 700 } });
  watcher.on('console', (m) => process.stderr.write(`[watch page] ${m.text()}\n`));
  const opened = Date.now();
  await watcher.goto(`${HTTP}/watch/77`);
  await watcher.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 0, null, { timeout: 15000 });
  const firstFrameMs = Date.now() - opened;
  await watcher.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 30, null, { timeout: 15000 });
  const watchedSize = () => watcher.evaluate(() => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
  let size = [0, 0];
  let sent = [0, 0];
  await until('the watched picture to have the published size', 10000, async () => {
    [size, sent] = [await watchedSize(), await sentSize()];
    return size[0] > 0 && size[0] === sent[0] && size[1] === sent[1];
  }).catch(() => { throw new Error(`watched ${size}, published ${sent}`); });
  await watcher.waitForFunction(() => (window.itg?.stats?.audioPackets || 0) > 20, null, { timeout: 10000 });
  const info = await streamInfo();
  if (!(info.width > 0 && info.height > 0)) throw new Error(`API says ${info.width}x${info.height}`);
  if (info.b_frames) throw new Error('a browser stream was flagged for B-frames');
  await sleep(500);
  await publisher.screenshot({ path: join(ARTIFACTS, 'publish.png') });
  await watcher.screenshot({ path: join(ARTIFACTS, 'watch-whip.png') });

  // Stop ends the stream; the watch page says offline.
  await publisher.click('#stop');
  await watcher.waitForFunction(() => document.body.dataset.state === 'offline', null, { timeout: 15000 });
  await until('the stream to end', 5000, async () => !(await streamInfo()));
  await watcher.screenshot({ path: join(ARTIFACTS, 'watch-whip-offline.png') });

  const summary = { published: sent, watched: size, first_frame_ms: firstFrameMs, bitrate_bps: info.bitrate_bps };
  writeFileSync(join(ARTIFACTS, 'publish-summary.json'), JSON.stringify(summary, null, 2));
  console.log(`publish test passed: ${JSON.stringify(summary)}`);
} catch (e) {
  console.error(`publish test FAILED: ${e.stack || e}`);
  for (const [name, p] of [['publisher', publisher], ['watcher', watcher]]) {
    if (!p) continue;
    const diag = await p.evaluate(() => ({
      state: document.body.dataset.state,
      status: document.getElementById('status')?.textContent,
      overlay: document.getElementById('overlay')?.textContent,
      stats: window.itg?.stats,
    })).catch((err) => `unavailable: ${err}`);
    console.error(`${name} at failure: ${JSON.stringify(diag)}`);
    await p.screenshot({ path: join(ARTIFACTS, `failure-${name}.png`) }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}
