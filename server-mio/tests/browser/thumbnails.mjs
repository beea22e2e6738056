// The home page shows a live thumbnail per channel: an FTL stream (the project's client with
// the 640x360 fixture) and a WHIP stream (headless Chromium publishing its fake camera through
// the publish page) are live; the home page's card of each shows a picture at its stream's
// aspect ratio that the page swaps for a newer one as the stream goes on (Chromium's encoder
// sends keyframes only when asked: the server asks when the thumbnail is due). A screenshot of
// the grid is kept.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO_640, ITG_AUDIO, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, env, start, until, CHROMIUM_ARGS, finish } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const HTTP = 'http://127.0.0.1:18300';
const dir = mkdtempSync(join(tmpdir(), 'itg-thumbnails-'));
let browser;
let home;
let error;

/** What the home page's card of `channel` shows: its picture's URL and natural size. */
function card(page, channel) {
  return page.evaluate((c) => {
    const li = document.querySelector(`#channels li[data-channel="${c}"]`);
    const img = li?.querySelector('img');
    if (!img || img.hidden || !img.complete) return null;
    return { url: img.getAttribute('src'), w: img.naturalWidth, h: img.naturalHeight, live: li.classList.contains('live') };
  }, channel);
}

try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const data = `${dir}/data`;
  const keys = {};
  for (const [channel, name] of [[77, 'FTL camera'], [78, 'Browser camera']]) {
    keys[channel] = execFileSync(SERVER, ['keys', 'add', '--data-dir', data, '--channel', String(channel), '--name', name])
      .toString().trim().split('\n').pop();
  }
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18300', '--ftl-port', '18304', '--webrtc-port', '20220',
    '--media-ports', '19220-19230', '--data-dir', data, '--thumbnail-every', '2'], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTP}/api/streams`)).ok);
  start(env('ITG_CLIENT_BIN'), ['--server', '127.0.0.1:18304', '--key', keys[77], '--video', env('ITG_VIDEO_640'),
    '--audio', env('ITG_AUDIO'), '--loop'], 'ftl-client');

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  const publisher = await browser.newPage({ viewport: { width: 960, height: 760 } });
  await publisher.goto(`${HTTP}/publish/78`);
  await publisher.fill('#key', keys[78]);
  await publisher.click('#go');
  await publisher.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 15000 });

  home = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  home.on('console', (m) => process.stderr.write(`[home] ${m.text()}\n`));
  await home.goto(`${HTTP}/`);
  const first = {};
  for (const channel of [77, 78]) {
    await until(`a thumbnail of channel ${channel} on the home page`, 20000, async () => (first[channel] = await card(home, channel)) !== null);
    const api = (await (await fetch(`${HTTP}/api/streams`)).json()).streams.find((s) => s.channel === channel);
    const c = first[channel];
    console.error(`channel ${channel}: ${JSON.stringify(c)}; stream ${api.width}x${api.height}`);
    if (!c.live) throw new Error(`channel ${channel}'s card is not live`);
    if (!(c.w > 0 && c.h > 0)) throw new Error(`channel ${channel}: an empty picture`);
    const aspect = c.w / c.h;
    const streamAspect = api.width / api.height;
    if (Math.abs(aspect - streamAspect) > 0.02) throw new Error(`channel ${channel}: aspect ${aspect}, stream ${streamAspect}`);
    if (channel === 77 && (c.w !== 640 || c.h !== 360)) throw new Error(`channel 77: ${c.w}x${c.h}`);
  }
  // Both pictures move on: the page swaps in newer ones.
  const changed = {};
  for (const channel of [77, 78]) {
    await until(`a newer thumbnail of channel ${channel}`, 20000, async () => {
      const c = await card(home, channel);
      if (c && c.url !== first[channel].url) { changed[channel] = c; return true; }
      return false;
    });
  }
  await sleep(500);
  await home.screenshot({ path: `${ARTIFACTS}/home-thumbnails.png` });
  writeFileSync(`${ARTIFACTS}/home-thumbnails.json`, JSON.stringify({ first, changed }, null, 2));
} catch (e) {
  error = e;
} finally {
  await finish({ error, name: 'home thumbnails', page: home, browser, dir, artifacts: ARTIFACTS });
}
