// Headless Chromium over TLS: the server gets a certificate made here (openssl, ECDSA P-256),
// Chromium is told to trust exactly that key (its SPKI hash), and plays the watch page over
// https and WHEP; a WebSocket opened from the page works over wss. Runs inside the
// loopback-only network namespace the caller made.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, serveLiveChannel, finish, CHROMIUM_ARGS } from './lib.mjs';

const ARTIFACTS = env('ITG_ARTIFACTS');
// The test's own fetches to the self-signed server (Chromium checks the certificate itself).
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

let browser;
let page;
let error;
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
  const HTTPS = await serveLiveChannel({
    dir, http: 18443, ftl: 18484, webrtc: 20020, media: '19040-19050', scheme: 'https', extra: ['--tls-cert', cert, '--tls-key', key],
  });

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
  error = e;
} finally {
  await finish({ error, name: 'TLS browser test', page, browser, dir, artifacts: ARTIFACTS });
}
