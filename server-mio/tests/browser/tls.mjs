// Headless Chromium over TLS: the server gets a certificate made here (openssl, ECDSA P-256),
// Chromium is told to trust exactly that key (its SPKI hash), and plays the watch page over
// https and WHEP; a WebSocket opened from the page works over wss. Runs inside the
// loopback-only network namespace the caller made.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { children, env, start, until, CHROMIUM_ARGS } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const CLIENT = env('ITG_CLIENT_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const HTTPS = 'https://127.0.0.1:18443';
// The test's own fetches to the self-signed server (Chromium checks the certificate itself).
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

let browser;
let page;
const dir = mkdtempSync(join(tmpdir(), 'itg-tls-browser-'));
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const cert = join(dir, 'c.pem');
  const key = join(dir, 'k.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert],
  { stdio: 'ignore' });
  const spki = execFileSync('sh', ['-c', `openssl x509 -pubkey -noout -in ${cert} | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`])
    .toString().trim();
  const streamKey = execFileSync(SERVER, ['keys', 'add', '--data-dir', join(dir, 'data'), '--channel', '77', '--name', 'TLS test'])
    .toString().trim().split('\n').pop();
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18443', '--ftl-port', '18484', '--webrtc-port', '20020',
    '--media-ports', '19040-19050', '--data-dir', join(dir, 'data'), '--tls-cert', cert, '--tls-key', key], 'server');
  await until('the server', 10000, async () => (await fetch(`${HTTPS}/api/streams`)).ok);
  start(CLIENT, ['--server', '127.0.0.1:18484', '--key', streamKey, '--video', env('ITG_VIDEO'), '--audio', env('ITG_AUDIO'), '--loop'], 'ftl-client');
  await until('the stream', 10000, async () => (await (await fetch(`${HTTPS}/api/streams`)).json()).streams.some((s) => s.live));

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${spki}`],
  });
  page = await browser.newPage({ viewport: { width: 960, height: 700 } });
  page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
  await page.goto(`${HTTPS}/watch/77`);
  await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 30, null, { timeout: 20000 });
  const secure = await page.evaluate(() => window.isSecureContext && location.protocol === 'https:');
  if (!secure) throw new Error('the page is not a secure https context');
  // The WebSocket signalling over wss, from the page.
  const wss = await page.evaluate(() => new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://${location.host}/websocket?channel=77`);
    ws.onmessage = (m) => { ws.close(); resolve(m.data); };
    ws.onerror = () => reject(new Error('wss failed'));
    setTimeout(() => reject(new Error('wss: no message')), 5000);
  }));
  if (!String(wss).includes('"stream"')) throw new Error(`wss said ${wss}`);
  await page.screenshot({ path: join(ARTIFACTS, 'watch-https.png') });
  const frames = await page.evaluate(() => window.itg.stats.framesDecoded);
  writeFileSync(join(ARTIFACTS, 'tls-summary.json'), JSON.stringify({ frames, wss }, null, 2));
  console.log(`TLS browser test passed: ${frames} frames decoded over https, wss answered`);
} catch (e) {
  console.error(`TLS browser test FAILED: ${e.stack || e}`);
  if (page) await page.screenshot({ path: join(ARTIFACTS, 'tls-failure.png') }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
