// Headless Chromium plays a recording from the watch page's list: the server records a live
// stream (--record), the stream ends, the page lists the file, its <video> plays it from
// /recordings/... (byte ranges), seeks, and decodes picture and sound.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, sleep, env, until, CHROMIUM_ARGS, serveLiveChannel, finish } from './lib.mjs';

const ARTIFACTS = env('ITG_ARTIFACTS');
const dir = mkdtempSync(join(tmpdir(), 'itg-recording-'));
let browser;
let page;
let error;
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const base = await serveLiveChannel({ dir, http: 18280, ftl: 18284, webrtc: 20200, media: '19200-19210', extra: ['--record'] });
  await sleep(7000);
  // The stream ends: the recording is finished.
  const client = children[1];
  const exited = new Promise((r) => client.once('exit', r));
  client.kill('SIGTERM');
  await exited;
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  page = await browser.newPage();
  await page.goto(`${base}/watch/77`);
  await until('the recordings list', 20000, () => page.evaluate(() => {
    const l = window.itgRecordings?.list || [];
    return l.length === 1 && !l[0].recording && l[0].duration_s > 5;
  }));
  const rec = await page.evaluate(() => window.itgRecordings.list[0]);
  console.error(`listed: ${JSON.stringify(rec)}`);
  await page.evaluate((url) => window.itgRecordings.play(url), rec.url);
  await until('playback', 10000, () => page.evaluate(() => document.getElementById('replay').currentTime > 1));
  const size = await page.evaluate(() => [document.getElementById('replay').videoWidth, document.getElementById('replay').videoHeight]);
  if (size[0] !== 320 || size[1] !== 180) throw new Error(`picture ${size}`);
  // Seek back into the middle and play on from there.
  const target = Math.min(4, rec.duration_s - 2);
  await page.evaluate((t) => new Promise((resolve) => {
    const v = document.getElementById('replay');
    v.addEventListener('seeked', resolve, { once: true });
    v.currentTime = t;
  }), target);
  const after = await page.evaluate(() => document.getElementById('replay').currentTime);
  if (Math.abs(after - target) > 0.5) throw new Error(`seeked to ${after}, not ${target}`);
  await sleep(1000);
  const state = await page.evaluate(() => {
    const v = document.getElementById('replay');
    return {
      time: v.currentTime,
      frames: v.getVideoPlaybackQuality().totalVideoFrames,
      audioBytes: v.webkitAudioDecodedByteCount,
      error: v.error && v.error.message,
    };
  });
  console.error(`after the seek to ${target}: ${JSON.stringify(state)}`);
  if (state.error) throw new Error(state.error);
  if (!(state.time > after + 0.5)) throw new Error('playback did not go on after the seek');
  if (!(state.frames > 30)) throw new Error(`only ${state.frames} frames decoded`);
  if (!(state.audioBytes > 0)) throw new Error('no audio decoded');
  await page.screenshot({ path: `${ARTIFACTS}/recording.png` });
} catch (e) {
  error = e;
} finally {
  await finish({ error, name: 'recording playback', page, browser, dir, artifacts: ARTIFACTS });
}
