// Every codec a browser publishes: headless Chromium publishes its fake camera through the
// publish page (WHIP) in VP8, VP9 and AV1 in turn (setCodecPreferences); for each, a Chromium
// watch page decodes it at the published size, a late viewer starts at once, and the API names
// the codec. Headless Firefox (no OpenH264 here) plays the VP8 and AV1 streams, which it
// decodes itself. Each stream gets a thumbnail at its size (its keyframes decoded by ffmpeg).
// The server records: the VP9 and AV1 recordings read back in ffprobe with
// their codec and size and play in Chromium; the VP8 stream is not recorded (said in a log
// line). Runs in the loopback-only namespace the caller made, plus a veth pair with a
// test address for Firefox (it gathers no ICE candidate on loopback alone).
//
// Environment: ITG_SERVER_BIN, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, sleep, env, start, until, CHROMIUM_ARGS, launchFirefox } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const HTTP = 'http://127.0.0.1:18110';
const ADDR = '10.79.0.1';

async function streamInfo(channel) {
  const r = await fetch(`${HTTP}/api/streams`);
  return (await r.json()).streams.find((s) => s.channel === channel && s.live);
}

/** A Chromium page watching `channel`: resolves with its first-frame time and decoded size. */
async function watch(browser, channel, frames = 30) {
  const page = await browser.newPage({ viewport: { width: 960, height: 700 } });
  page.on('console', (m) => process.stderr.write(`[watch ${channel}] ${m.text()}\n`));
  const opened = Date.now();
  await page.goto(`${HTTP}/watch/${channel}`);
  await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 0, null, { timeout: 15000 });
  const firstFrameMs = Date.now() - opened;
  await page.waitForFunction((n) => (window.itg?.stats?.framesDecoded || 0) > n, frames, { timeout: 15000 });
  return { page, firstFrameMs };
}

let browser;
let firefox;
const pages = [];
const dataDir = mkdtempSync(join(tmpdir(), 'itg-codecs-'));
const results = {};
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  execFileSync('ip', ['link', 'add', 'itgcd0', 'type', 'veth', 'peer', 'name', 'itgcd1']);
  execFileSync('ip', ['addr', 'add', `${ADDR}/24`, 'dev', 'itgcd0']);
  execFileSync('ip', ['link', 'set', 'itgcd0', 'up']);
  execFileSync('ip', ['link', 'set', 'itgcd1', 'up']);
  const codecs = { VP8: 71, VP9: 72, AV1: 73 };
  const keys = {};
  for (const [codec, channel] of Object.entries(codecs)) {
    keys[codec] = execFileSync(SERVER, ['keys', 'add', '--data-dir', dataDir, '--channel', String(channel), '--name', codec])
      .toString().trim().split('\n').pop();
  }
  start(SERVER, ['--http-port', '18110', '--ftl-port', '18114', '--webrtc-port', '20050',
    '--media-ports', '19100-19110', '--data-dir', dataDir, '--record', '--thumbnail-every', '2',
    // ITG_CAPTURE=<dir>: the sessions captured, as the replay fixtures were made.
    ...(process.env.ITG_CAPTURE ? ['--capture', process.env.ITG_CAPTURE] : [])], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTP}/api/streams`)).ok);

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  const publishers = {};
  for (const [codec, channel] of Object.entries(codecs)) {
    const publisher = await browser.newPage({ viewport: { width: 960, height: 760 } });
    pages.push(publisher);
    publishers[codec] = publisher;
    publisher.on('console', (m) => process.stderr.write(`[publish ${codec}] ${m.text()}\n`));
    await publisher.goto(`${HTTP}/publish/${channel}`);
    await publisher.selectOption('#resolution', '640x360');
    await publisher.selectOption('#codec', codec);
    await publisher.fill('#key', keys[codec]);
    const offered = Date.now();
    await publisher.click('#go');
    await publisher.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 15000 });
    await until(`the ${codec} stream to go live`, 10000, async () => (await streamInfo(channel))?.codec === codec);
    const { page: watcher, firstFrameMs } = await watch(browser, channel);
    pages.push(watcher);
    const afterOffer = Date.now() - offered;
    const sent = () => publisher.evaluate(() => {
      const d = document.getElementById('status').dataset;
      return [Number(d.width || 0), Number(d.height || 0)];
    });
    const seen = () => watcher.evaluate(() => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
    let size = [0, 0];
    let published = [0, 0];
    await until(`the ${codec} picture at the published size`, 10000, async () => {
      [size, published] = [await seen(), await sent()];
      return size[0] > 0 && size[0] === published[0] && size[1] === published[1];
    }).catch(() => { throw new Error(`${codec}: watched ${size}, published ${published}`); });
    const info = await streamInfo(channel);
    if (info.width !== size[0] || info.height !== size[1]) {
      throw new Error(`${codec}: the API says ${info.width}x${info.height}, the picture is ${size}`);
    }
    // A late viewer starts from the cache (or a keyframe asked of the publisher) at once.
    await sleep(2500);
    const late = await watch(browser, channel, 10);
    pages.push(late.page);
    await watcher.screenshot({ path: join(ARTIFACTS, `codec-${codec}.png`) });
    // Its thumbnail: a keyframe decoded by ffmpeg, at the stream's size (640 wide at most).
    let thumb = null;
    await until(`a thumbnail of the ${codec} stream`, 15000, async () => {
      const r = await fetch(`${HTTP}/thumbnails/${channel}.jpg`);
      if (r.status !== 200) return false;
      thumb = { size: r.headers.get('x-itg-thumbnail-size'), bytes: (await r.arrayBuffer()).byteLength };
      return true;
    });
    if (thumb.size !== `${size[0]}x${size[1]}` || !(thumb.bytes > 1000)) {
      throw new Error(`${codec}: thumbnail ${JSON.stringify(thumb)}, picture ${size}`);
    }
    results[codec] = { size, profile: info.profile, first_frame_ms: firstFrameMs, late_first_frame_ms: late.firstFrameMs, offer_to_frames_ms: afterOffer, thumbnail: thumb };
    if (late.firstFrameMs > 3000) throw new Error(`${codec}: the late viewer waited ${late.firstFrameMs} ms`);
  }

  // Firefox decodes VP8 and AV1 without OpenH264.
  firefox = await launchFirefox(puppeteer);
  for (const codec of ['VP8', 'AV1']) {
    const page = await firefox.newPage();
    page.on('console', (m) => process.stderr.write(`[firefox ${codec}] ${m.text()}\n`));
    const opened = Date.now();
    await page.goto(`http://${ADDR}:18110/watch/${codecs[codec]}`);
    await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 30, { timeout: 20000 })
      .catch(async (e) => {
        const why = await page.evaluate(() => `${document.body.dataset.state}: ${document.getElementById('overlay').textContent}`);
        throw new Error(`Firefox ${codec}: ${why} (${e.message})`);
      });
    results[codec].firefox_ms = Date.now() - opened;
    await page.screenshot({ path: join(ARTIFACTS, `codec-${codec}-firefox.png`) });
    await page.close();
  }

  // The streams end; their recordings (VP9, AV1; VP8 is not recorded) read back and play.
  for (const p of Object.values(publishers)) await p.click('#stop');
  for (const [codec, channel] of Object.entries(codecs)) {
    const list = async () => (await (await fetch(`${HTTP}/api/recordings?channel=${channel}`)).json()).recordings;
    if (codec === 'VP8') {
      await sleep(1000);
      if ((await list()).length !== 0) throw new Error('the VP8 stream was recorded');
      continue;
    }
    let rec = null;
    await until(`the ${codec} recording`, 15000, async () => {
      rec = (await list()).find((r) => !r.recording && r.duration_s > 2);
      return rec;
    });
    const file = join(dataDir, `${codec}.mp4`);
    writeFileSync(file, Buffer.from(await (await fetch(`${HTTP}${rec.url}`)).arrayBuffer()));
    const probe = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_streams', '-of', 'json', file]).toString());
    const v = probe.streams.find((x) => x.codec_type === 'video');
    const a = probe.streams.find((x) => x.codec_type === 'audio');
    const frames = Number(execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0',
      '-show_entries', 'stream=nb_read_frames', '-of', 'csv=p=0', file]).toString().trim());
    const want = { VP9: 'vp9', AV1: 'av1' }[codec];
    if (!v || v.codec_name !== want || v.width !== 640 || v.height !== 360 || !a || a.codec_name !== 'opus' || !(frames > 30)) {
      throw new Error(`${codec} recording: ${JSON.stringify({ v, a, frames })}`);
    }
    const player = await browser.newPage();
    pages.push(player);
    await player.goto(`${HTTP}/`);
    const played = await player.evaluate(async (url) => {
      const video = document.createElement('video');
      video.muted = true;
      video.src = url;
      document.body.append(video);
      await video.play();
      const end = Date.now() + 10000;
      while (Date.now() < end && video.currentTime < 1.5) await new Promise((r) => setTimeout(r, 100));
      return { t: video.currentTime, w: video.videoWidth, h: video.videoHeight, error: video.error?.message };
    }, rec.url);
    if (!(played.t >= 1.5 && played.w === 640 && played.h === 360)) throw new Error(`${codec} recording in Chromium: ${JSON.stringify(played)}`);
    results[codec].recording = { bytes: readFileSync(file).length, duration_s: rec.duration_s, ffprobe_frames: frames, played_s: played.t };
  }
  writeFileSync(join(ARTIFACTS, 'codecs-summary.json'), JSON.stringify(results, null, 2));
  console.log(`codecs test passed: ${JSON.stringify(results)}`);
} catch (e) {
  console.error(`codecs test FAILED: ${e.stack || e}`);
  for (const [i, p] of pages.entries()) {
    await p.screenshot({ path: join(ARTIFACTS, `codecs-failure-${i}.png`) }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  if (firefox) await firefox.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}
