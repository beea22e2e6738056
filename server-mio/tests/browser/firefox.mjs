// Headless Firefox (Debian's firefox-esr, through puppeteer-core's WebDriver BiDi) against a live
// channel, inside the network namespace the caller made (plus a veth pair with a test address:
// Firefox gathers no ICE candidate on loopback alone). This Firefox has no
// H.264 (it downloads OpenH264 from the internet on first use, which the test machine cannot):
// the watch page must say so in words; a WHEP offer with video must be refused with 406 naming
// the plugin; an audio-only WHEP session must connect and receive Opus.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_ARTIFACTS.
import puppeteer from 'puppeteer-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, serveLiveChannel, finish, launchFirefox } from './lib.mjs';

const ARTIFACTS = env('ITG_ARTIFACTS');
// Firefox gathers no ICE candidate on a namespace with loopback alone: the test gives its own
// namespace a veth pair with a test address (traffic stays inside the namespace).
const ADDR = '10.78.0.1';

let browser;
let page;
let error;
const dir = mkdtempSync(join(tmpdir(), 'itg-firefox-'));
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  execFileSync('ip', ['link', 'add', 'itgff0', 'type', 'veth', 'peer', 'name', 'itgff1']);
  execFileSync('ip', ['addr', 'add', `${ADDR}/24`, 'dev', 'itgff0']);
  execFileSync('ip', ['link', 'set', 'itgff0', 'up']);
  execFileSync('ip', ['link', 'set', 'itgff1', 'up']);
  const HTTP = await serveLiveChannel({ dir, addr: ADDR, http: 18070, ftl: 18074, webrtc: 20030, media: '19060-19070' });

  browser = await launchFirefox(puppeteer);
  page = await browser.newPage();
  page.on('console', (m) => process.stderr.write(`[firefox page] ${m.text()}\n`));
  const version = await browser.version();

  // The watch page: no H.264 here, said in words.
  await page.goto(`${HTTP}/watch/77`);
  await page.waitForFunction(() => document.body.dataset.state === 'unsupported', { timeout: 15000 });
  const said = await page.evaluate(() => document.getElementById('overlay').textContent);
  if (!/H\.264/.test(said) || !/OpenH264/.test(said)) throw new Error(`the page said: ${said}`);
  await page.screenshot({ path: join(ARTIFACTS, 'firefox-no-h264.png') });

  // Firefox's own offer with video: refused by name (no broken answer).
  const refused = await page.evaluate(async () => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch('/whep/77', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    pc.close();
    return { status: r.status, body: await r.text() };
  });
  if (refused.status !== 406 || !/OpenH264/.test(refused.body)) throw new Error(`video offer: ${JSON.stringify(refused)}`);

  // Audio only: a connected session, Opus arrives.
  const audio = await page.evaluate(async () => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch('/whep/77', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    if (r.status !== 201) return { status: r.status, body: await r.text() };
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    const end = Date.now() + 10000;
    let packets = 0;
    while (Date.now() < end) {
      await new Promise((res) => setTimeout(res, 250));
      (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') packets = s.packetsReceived; });
      if (packets > 50) break;
    }
    const state = pc.connectionState || pc.iceConnectionState;
    pc.close();
    return { status: r.status, state, packets };
  });
  if (audio.status !== 201 || !(audio.packets > 50)) throw new Error(`audio-only session: ${JSON.stringify(audio)}`);
  writeFileSync(join(ARTIFACTS, 'firefox-summary.json'), JSON.stringify({ version, refused: refused.status, audio }, null, 2));
  console.log(`Firefox test passed: ${version}; video offer 406, audio-only session ${audio.state} with ${audio.packets} packets`);
} catch (e) {
  error = e;
} finally {
  await finish({ error, name: 'Firefox test', page, browser, dir, artifacts: ARTIFACTS });
}
