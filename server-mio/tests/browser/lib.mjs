// Helpers shared by the browser scripts: child processes, bounded waits.
import { spawn, execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';

export const children = [];
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };

export function start(bin, args, name) {
  const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env } });
  p.stdout.on('data', (d) => process.stderr.write(`[${name}] ${d}`));
  p.stderr.on('data', (d) => process.stderr.write(`[${name}] ${d}`));
  children.push(p);
  return p;
}

export async function until(what, ms, f) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { if (await f()) return; } catch (_) { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Runs a Python WebRTC client (`script` under `python`) as a WHIP publisher or a WHEP viewer of
 * `url`; resolves with its JSON result line and exit code.
 */
function pythonClient(name, python, script, mode, url, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(python, [script, mode, '--url', url, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(p);
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => process.stderr.write(`[${name} ${mode}] ${d}`));
    p.on('close', (code) => {
      try {
        resolve({ code, ...JSON.parse(out.trim().split('\n').pop()) });
      } catch (_) {
        reject(new Error(`${name} ${mode} printed no result (exit ${code}): ${out}`));
      }
    });
  });
}

/** GStreamer's webrtcbin client (tests/gst/itg_gst.py at `script`), gathering on 127.0.0.1. */
export function gstreamer(script, mode, url, extra = [], seconds = 6) {
  return pythonClient('gst', '/usr/bin/python3', script, mode, url,
    ['--seconds', String(seconds), '--local-ip', '127.0.0.1', ...extra]);
}

/**
 * aiortc's client (tests/aiortc/itg_aiortc.py) under the virtualenv's `python`. aioice gathers
 * on no address 127.0.0.1: the caller gives loopback another (see `loopbackAlias`).
 */
export function aiortc(python, script, mode, url, extra = [], seconds = 6) {
  return pythonClient('aiortc', python, script, mode, url, ['--seconds', String(seconds), ...extra]);
}

/** A second loopback address in the test's namespace (127.0.0.2), for stacks that skip 127.0.0.1. */
export function loopbackAlias() {
  execFileSync('ip', ['addr', 'add', '127.0.0.2/8', 'dev', 'lo']);
}

/**
 * Headless Firefox (Debian's firefox-esr) through puppeteer-core, with what a private test
 * namespace needs: host candidates unobfuscated, loopback allowed, autoplay (and `prefs`, e.g.
 * a fake camera). Firefox gathers no ICE candidate on a namespace with loopback alone: callers
 * add a veth test address.
 */
export async function launchFirefox(puppeteer, prefs = {}) {
  return puppeteer.launch({
    browser: 'firefox',
    executablePath: '/usr/bin/firefox-esr',
    headless: true,
    extraPrefsFirefox: {
      'media.peerconnection.ice.loopback': true,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      'media.autoplay.default': 0,
      ...prefs,
    },
  });
}

/** Chromium as the tests run it: loopback WebRTC allowed, autoplay without a gesture. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'];

/**
 * Starts the server on `dir` with channel 77 and streams the fixture to it with our FTL
 * client; resolves with the HTTP base URL once the stream is live.
 */
export async function serveLiveChannel({ dir, addr = '127.0.0.1', http, ftl, webrtc, media, extra = [], scheme = 'http' }) {
  const server = env('ITG_SERVER_BIN');
  const data = `${dir}/data`;
  const key = execFileSync(server, ['keys', 'add', '--data-dir', data, '--channel', '77', '--name', 'Test'])
    .toString().trim().split('\n').pop();
  start(server, ['--addr', addr, '--http-port', String(http), '--ftl-port', String(ftl), '--webrtc-port', String(webrtc),
    '--media-ports', media, '--data-dir', data, ...extra], 'server');
  const base = `${scheme}://${addr}:${http}`;
  await until('the server', 10000, async () => (await fetch(`${base}/api/streams`)).ok);
  start(env('ITG_CLIENT_BIN'), ['--server', `${addr}:${ftl}`, '--key', key, '--video', env('ITG_VIDEO'),
    '--audio', env('ITG_AUDIO'), '--loop'], 'ftl-client');
  await until('the stream', 10000, async () => (await (await fetch(`${base}/api/streams`)).json()).streams.some((s) => s.live));
  return base;
}

/** Ends a script: a screenshot of the failure, the browser and children closed, `dir` removed. */
export async function finish({ error, name, page, browser, dir, artifacts }) {
  if (error) {
    console.error(`${name} FAILED: ${error.stack || error}`);
    if (page) await page.screenshot({ path: `${artifacts}/${name.replace(/\W+/g, '-')}-failure.png` }).catch(() => {});
    process.exitCode = 1;
  }
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}

/** Chromium publishing its fake camera at 1280x720 in three simulcast layers through the
 *  publish page of `base` (an http:// URL on 127.0.0.1, a secure context) on `channel`. Returns
 *  the publish page once it says live. */
export async function publishLayers(browser, base, channel, key) {
  const publisher = await browser.newPage({ viewport: { width: 960, height: 760 } });
  publisher.on('console', (m) => process.stderr.write(`[publish page] ${m.text()}\n`));
  await publisher.goto(`${base}/publish/${channel}`);
  await publisher.selectOption('#resolution', '1280x720');
  await publisher.selectOption('#layers', '3');
  await publisher.fill('#key', key);
  await publisher.click('#go');
  await publisher.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 15000 });
  return publisher;
}
