// Headless Chromium when the media port is blocked: the namespace's firewall (nftables) drops
// UDP to the WebRTC port, ICE fails, and the watch page says what it tried and where the
// server's network report is; once the port opens again, it plays without a reload.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, serveLiveChannel, finish, CHROMIUM_ARGS } from './lib.mjs';

const ARTIFACTS = env('ITG_ARTIFACTS');
const nft = (...args) => execFileSync('nft', args);

let browser;
let page;
let error;
const dir = mkdtempSync(join(tmpdir(), 'itg-icefail-'));
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const HTTP = await serveLiveChannel({ dir, http: 18060, ftl: 18064, webrtc: 20040, media: '19080-19090' });

  nft('add', 'table', 'inet', 'itgtest');
  nft('add', 'chain', 'inet', 'itgtest', 'input', '{ type filter hook input priority 0; }');
  nft('add', 'rule', 'inet', 'itgtest', 'input', 'udp', 'dport', '20040', 'drop');

  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 960, height: 700 } });
  page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
  const t0 = Date.now();
  await page.goto(`${HTTP}/watch/77`);
  await page.waitForFunction(() => window.itg?.iceFailed, null, { timeout: 60000 });
  const failedAfter = Date.now() - t0;
  const said = await (await page.waitForFunction(() => {
    const t = document.getElementById('overlay').textContent;
    return /Could not connect/.test(t) && document.querySelector('#overlay a') ? t : null;
  }, null, { timeout: 15000 })).jsonValue();
  if (!said.includes('udp 127.0.0.1:20040') || !said.includes('/api/selftest')) throw new Error(`the page said: ${said}`);
  const link = await page.evaluate(() => document.querySelector('#overlay a')?.getAttribute('href'));
  if (link !== '/api/selftest') throw new Error(`no link to the report: ${link}`);
  await page.screenshot({ path: join(ARTIFACTS, 'ice-failed.png') });

  // The port opens: the page plays without a reload.
  nft('delete', 'table', 'inet', 'itgtest');
  await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 10, null, { timeout: 60000 });
  writeFileSync(join(ARTIFACTS, 'icefail-summary.json'), JSON.stringify({ failed_after_ms: failedAfter, said }, null, 2));
  console.log(`ICE failure test passed: failed after ${failedAfter} ms, the page said what it tried, then played`);
} catch (e) {
  error = e;
} finally {
  await finish({ error, name: 'ICE failure test', page, browser, dir, artifacts: ARTIFACTS });
}
