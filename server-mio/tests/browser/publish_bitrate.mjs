// Headless Chromium publishes a 1280x720 fake camera through the publish page (WHIP) and the
// server's congestion feedback lets its encoder ramp: over 2 Mbit/s within 10 s with the default
// cap, never over `--whip-max-bitrate` when that is set lower, and (a publisher whose offer
// has no transport-wide congestion control, so it reads only REMB) up from its start rate on
// the server's REMB. A WHEP viewer checks the published size arrives.
//
// The camera is a file of noisy 1280x720 video (ITG_FAKE_VIDEO, MJPEG made by ffmpeg): Chromium's
// built-in fake camera is a flat animation its encoder codes in ~250 kbit/s whatever it is
// allowed, which would measure the picture, not the feedback.
//
// Environment: ITG_SERVER_BIN, ITG_ARTIFACTS, ITG_FAKE_VIDEO. Runs inside a loopback-only
// namespace.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, sleep, env, start, until, CHROMIUM_ARGS } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const FAKE_VIDEO = env('ITG_FAKE_VIDEO');

/** Strips transport-wide congestion control from an offer: what a REMB-only stack offers. */
const REMB_ONLY = `(() => {
  const create = RTCPeerConnection.prototype.createOffer;
  RTCPeerConnection.prototype.createOffer = async function (...a) {
    const o = await create.apply(this, a);
    const sdp = o.sdp.split('\\r\\n').filter((l) => !/transport-cc|transport-wide-cc/.test(l)).join('\\r\\n');
    return { type: o.type, sdp };
  };
})();`;

let browser;
const results = {};

/**
 * One run: a server with `extra` flags, the publish page live for `seconds`; returns the
 * page's sent bitrate per second, the server's view and the stream's size as a viewer saw it.
 */
async function run(name, port, extra, { rembOnly = false, seconds = 12, watch = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'itg-bitrate-'));
  const http = `http://127.0.0.1:${port}`;
  const key = execFileSync(SERVER, ['keys', 'add', '--data-dir', dir, '--channel', '77', '--name', 'Bitrate'])
    .toString().trim().split('\n').pop();
  const server = start(SERVER, ['--addr', '127.0.0.1', '--http-port', String(port), '--ftl-port', String(port + 4),
    '--webrtc-port', String(port + 2000), '--media-ports', '0', '--data-dir', dir, ...extra], `server ${name}`);
  try {
    await until('the server', 10000, async () => (await fetch(`${http}/api/streams`)).ok);
    const page = await browser.newPage();
    page.on('console', (m) => process.stderr.write(`[publish ${name}] ${m.text()}\n`));
    if (rembOnly) await page.addInitScript(REMB_ONLY);
    await page.goto(`${http}/publish/77`);
    await page.selectOption('#resolution', '1280x720');
    await page.fill('#key', key);
    const began = Date.now();
    await page.click('#go');
    await page.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 15000 })
      .catch(async (e) => {
        const said = await page.evaluate(() => `${document.body.dataset.state}: ${document.getElementById('status').textContent}`);
        throw new Error(`the publish page did not go live (${said}): ${e.message}`);
      });
    const samples = [];
    let info = null;
    let watched = null;
    let viewer = null;
    if (watch) {
      viewer = await browser.newPage();
      await viewer.goto(`${http}/watch/77`);
    }
    while (Date.now() - began < seconds * 1000) {
      await sleep(1000);
      const d = await page.evaluate(() => ({ ...document.getElementById('status').dataset }));
      info = (await (await fetch(`${http}/api/streams`)).json()).streams.find((s) => s.channel === 77 && s.live);
      samples.push({
        at_s: Math.round((Date.now() - began) / 100) / 10,
        page_kbps: Number(d.kbps || 0),
        server_kbps: Math.round((info?.bitrate_bps || 0) / 1000),
        size: `${d.width}x${d.height}`,
        estimate_kbps: Number(d.estimate || 0),
        limitation: d.limitation,
        remb_kbps: info?.remb_bps ? Math.round(info.remb_bps / 1000) : null,
      });
    }
    if (viewer) {
      // The sizes at one moment (the encoder changes its size as its estimate moves).
      const size = (p, f) => p.evaluate(f);
      const seen = () => size(viewer, () => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
      const sent = () => size(page, () => [Number(document.getElementById('status').dataset.width), Number(document.getElementById('status').dataset.height)]);
      await until('the watched size to be the published size', 10000, async () => {
        const [a, b] = [await seen(), await sent()];
        watched = { watched: a.join('x'), published: b.join('x') };
        return a[0] > 0 && a[0] === b[0] && a[1] === b[1];
      }).catch(() => {});
      await viewer.close();
    }
    await page.screenshot({ path: join(ARTIFACTS, `publish-bitrate-${name}.png`) });
    await page.click('#stop');
    await page.close();
    const metrics = await (await fetch(`${http}/metrics`)).text();
    const remb = Number((/^itg_whip_remb_sent_total (\d+)/m.exec(metrics) || [])[1] || 0);
    return { samples, control: info?.congestion_control, remb_sent: remb, sizes: watched };
  } finally {
    server.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

const firstAbove = (samples, kbps) => samples.find((s) => s.server_kbps >= kbps)?.at_s ?? null;

try {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      `--use-file-for-fake-video-capture=${FAKE_VIDEO}`],
  });

  // Default cap (10 Mbit/s): the browser's own estimate, on our TWCC feedback, lets it ramp.
  const open = await run('default', 18110, [], { watch: true });
  results.default = { ...open, reached_2mbps_at_s: firstAbove(open.samples, 2000) };
  console.error(`default: ${JSON.stringify(results.default)}`);
  if (open.control !== 'twcc') throw new Error(`Chromium's feedback is ${open.control}, not twcc`);
  const tenSeconds = open.samples.filter((s) => s.at_s <= 10.5);
  if (!tenSeconds.some((s) => s.server_kbps >= 2000)) {
    throw new Error(`never 2 Mbit/s within 10 s: ${JSON.stringify(open.samples)}`);
  }
  if (!open.sizes || open.sizes.watched !== open.sizes.published) {
    throw new Error(`the viewer's size is not the publisher's: ${JSON.stringify(open.sizes)}`);
  }

  // A cap below what the browser would send: it stays under it (b=AS in the answer, REMB).
  const capped = await run('capped', 18120, ['--whip-max-bitrate', '800']);
  results.capped = capped;
  console.error(`capped: ${JSON.stringify(capped)}`);
  const settled = capped.samples.slice(3);
  const over = settled.filter((s) => s.server_kbps > 800 * 1.1);
  if (over.length) throw new Error(`over the 800 kbit/s cap: ${JSON.stringify(over)}`);
  if (!settled.some((s) => s.server_kbps >= 400)) throw new Error(`starved under the cap: ${JSON.stringify(settled)}`);

  // REMB only: no TWCC in the offer; the server's REMB is what lets it go up.
  const remb = await run('remb', 18130, [], { rembOnly: true, seconds: 15 });
  results.remb = remb;
  console.error(`remb: ${JSON.stringify(remb)}`);
  if (remb.control !== 'remb') throw new Error(`a REMB-only publisher was taken for ${remb.control}`);
  if (remb.remb_sent < 10) throw new Error(`only ${remb.remb_sent} REMBs sent`);
  const late = remb.samples.slice(-3);
  if (!late.every((s) => s.server_kbps >= 700)) throw new Error(`a REMB publisher stayed low: ${JSON.stringify(remb.samples)}`);

  writeFileSync(join(ARTIFACTS, 'publish-bitrate-summary.json'), JSON.stringify(results, null, 2));
  console.log(`publish bitrate test passed: default reached 2 Mbit/s at ${results.default.reached_2mbps_at_s} s`);
} catch (e) {
  console.error(`publish bitrate test FAILED: ${e.stack || e}`);
  writeFileSync(join(ARTIFACTS, 'publish-bitrate-summary.json'), JSON.stringify(results, null, 2));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
}
