// Headless Chromium and blocked media ports (nftables inside the test's namespace): with UDP
// open the page plays over UDP; with UDP dropped it plays over ICE-TCP; with both dropped it
// says what it tried and where the server's network report is, and plays once they open.
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

  // Which transport the page's connection selected.
  const transport = (p) => p.evaluate(async () => {
    const stats = await window.itg.player.pc.getStats();
    let pair = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    return pair ? stats.get(pair.localCandidateId)?.protocol : null;
  });
  const watch = async () => {
    const p = await browser.newPage({ viewport: { width: 960, height: 700 } });
    p.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
    const t = Date.now();
    await p.goto(`${HTTP}/watch/77`);
    await p.waitForFunction(() => window.itg?.firstFrameMs, null, { timeout: 30000 });
    return { p, firstFrameMs: Date.now() - t };
  };
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });

  // UDP open: the page plays over UDP.
  const udp = await watch();
  const udpTransport = await transport(udp.p);
  if (udpTransport !== 'udp') throw new Error(`with UDP open the page used ${udpTransport}`);
  const udpInfo = (await (await fetch(`${HTTP}/api/streams`)).json()).streams.find((s) => s.channel === 77);
  if (udpInfo.viewers !== 1 || udpInfo.viewers_tcp !== 0) throw new Error(`UDP viewer counted as ${JSON.stringify(udpInfo)}`);
  await udp.p.close();

  // UDP to the media port dropped by the namespace's firewall: ICE over TCP carries it.
  nft('add', 'table', 'inet', 'itgtest');
  nft('add', 'chain', 'inet', 'itgtest', 'input', '{ type filter hook input priority 0; }');
  nft('add', 'rule', 'inet', 'itgtest', 'input', 'udp', 'dport', '20040', 'drop');
  const tcp = await watch();
  const tcpTransport = await transport(tcp.p);
  if (tcpTransport !== 'tcp') throw new Error(`with UDP blocked the page used ${tcpTransport}`);
  await tcp.p.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 30, null, { timeout: 10000 });
  await tcp.p.screenshot({ path: join(ARTIFACTS, 'watch-ice-tcp.png') });
  // Counted by transport.
  const info = (await (await fetch(`${HTTP}/api/streams`)).json()).streams.find((s) => s.channel === 77);
  const metrics = await (await fetch(`${HTTP}/metrics`)).text();
  if (info.viewers_tcp !== 1 || !/^itg_viewers_connected_tcp 1$/m.test(metrics)) {
    throw new Error(`TCP viewers not counted: ${JSON.stringify(info)}`);
  }
  await tcp.p.close();

  // TCP dropped too: the page says what it tried and where the report is.
  nft('add', 'rule', 'inet', 'itgtest', 'input', 'tcp', 'dport', '20040', 'drop');
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
  if (!said.includes('udp 127.0.0.1:20040') || !said.includes('tcp 127.0.0.1:20040') || !said.includes('/api/selftest')) {
    throw new Error(`the page said: ${said}`);
  }
  await page.screenshot({ path: join(ARTIFACTS, 'ice-failed.png') });

  // The ports open: the page plays without a reload.
  nft('delete', 'table', 'inet', 'itgtest');
  await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 10, null, { timeout: 60000 });
  const summary = { first_frame_ms: { udp: udp.firstFrameMs, tcp: tcp.firstFrameMs }, failed_after_ms: failedAfter, said };
  writeFileSync(join(ARTIFACTS, 'icefail-summary.json'), JSON.stringify(summary, null, 2));
  console.log(`ICE test passed: ${JSON.stringify(summary)}`);
} catch (e) {
  error = e;
} finally {
  await finish({ error, name: 'ICE failure test', page, browser, dir, artifacts: ARTIFACTS });
}
