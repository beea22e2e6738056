// Headless Chromium against a cluster: Redis, an origin and an edge (its own process). The
// watch page is opened on the origin; its WHEP offer is sent on to the edge (307) and plays
// there. The edge is killed: the page starts again from the origin's URL, as it was first given,
// and plays again once the directory has let the dead edge go.
//
// Environment: ITG_SERVER_BIN, ITG_CLIENT_BIN, ITG_VIDEO, ITG_AUDIO, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, env, start, until, CHROMIUM_ARGS, finish } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const dir = mkdtempSync(join(tmpdir(), 'itg-cluster-'));
const ORIGIN = 'http://127.0.0.1:18380';
const EDGE = 'http://127.0.0.1:18390';
const CLUSTER = ['--cluster', 'redis://127.0.0.1:6391/0', '--cluster-token', 'browser-test'];
let browser;
let page;
let error;

const json = async (url) => (await fetch(url)).json();
const frames = () => page.evaluate(() => window.itg?.stats?.framesDecoded || 0);
const session = () => page.evaluate(() => window.itg.player.location || '');

try {
  mkdirSync(ARTIFACTS, { recursive: true });
  start('redis-server', ['--port', '6391', '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], 'redis');
  const key = execFileSync(SERVER, ['keys', 'add', '--data-dir', `${dir}/origin`, '--channel', '77'])
    .toString().trim().split('\n').pop();
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18380', '--ftl-port', '18384', '--webrtc-port', '20300',
    '--media-ports', '19300-19310', '--data-dir', `${dir}/origin`, '--role', 'origin', ...CLUSTER], 'origin');
  const edge = start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18390', '--ftl-port', '18394',
    '--webrtc-port', '20310', '--media-ports', '19320-19330', '--data-dir', `${dir}/edge`, '--role', 'edge',
    ...CLUSTER], 'edge');
  await until('both nodes in the directory', 15000,
    async () => (await json(`${ORIGIN}/api/streams`)).cluster.nodes.length === 2);
  start(env('ITG_CLIENT_BIN'), ['--server', '127.0.0.1:18384', '--key', key, '--video', env('ITG_VIDEO'),
    '--audio', env('ITG_AUDIO'), '--loop'], 'ftl-client');
  await until('the edge to see the stream', 10000,
    async () => (await json(`${EDGE}/api/streams`)).streams.some((s) => s.channel === 77 && s.live));

  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  page = await browser.newPage();
  page.on('console', (m) => console.error(`[page] ${m.text()}`));
  await page.goto(`${ORIGIN}/watch/77`);
  await until('frames from the edge', 20000, async () => (await frames()) > 30);
  const first = await session();
  console.error(`playing; session ${first}`);
  if (!first.startsWith(`${EDGE}/whep/77/`)) throw new Error(`the session is not on the edge: ${first}`);
  const origin = await json(`${ORIGIN}/api/streams`);
  if (origin.cluster.nodes.find((n) => n.url === EDGE)?.viewers !== 1) throw new Error('the edge does not count the viewer');

  // The edge dies.
  const killedAt = Date.now();
  edge.kill('SIGKILL');
  await until('frames again, from the origin', 40000, async () => {
    const s = await session();
    return s.startsWith(`${ORIGIN}/whep/77/`) && (await frames()) > 30;
  });
  console.error(`playing again from ${await session()} ${Date.now() - killedAt} ms after the edge was killed`);
  await page.screenshot({ path: `${ARTIFACTS}/cluster.png` });
} catch (e) {
  error = e;
} finally {
  await finish({ error, name: 'cluster failover', page, browser, dir, artifacts: ARTIFACTS });
}
