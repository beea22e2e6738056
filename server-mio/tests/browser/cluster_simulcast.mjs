// Simulcast through an edge, in a browser: Redis, an origin and an edge (its own process);
// headless Chromium publishes three layers to the origin through its publish page, and a
// Chromium viewer opens the watch page on the origin, which places its WHEP session on the edge.
// The edge pulls every layer; its viewer's layer follows its own bandwidth estimate there (it
// climbs to 1280x720), and the quality menu (the layers as the page lists them) fixes it on the
// smallest (320x180) at the edge.
//
// Environment: ITG_SERVER_BIN, ITG_ARTIFACTS.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, start, until, CHROMIUM_ARGS, finish, publishLayers } from './lib.mjs';

const SERVER = env('ITG_SERVER_BIN');
const ARTIFACTS = env('ITG_ARTIFACTS');
const dir = mkdtempSync(join(tmpdir(), 'itg-cluster-simulcast-'));
const ORIGIN = 'http://127.0.0.1:18360';
const EDGE = 'http://127.0.0.1:18370';
const CLUSTER = ['--cluster', 'redis://127.0.0.1:6392/0', '--cluster-token', 'browser-test'];
let browser;
let page;
let error;
const summary = {};

const json = async (url) => (await fetch(url)).json();
const stream = async (node) => (await json(`${node}/api/streams`)).streams.find((s) => s.channel === 77 && s.live);
const width = () => page.evaluate(() => document.getElementById('video').videoWidth);

try {
  mkdirSync(ARTIFACTS, { recursive: true });
  start('redis-server', ['--port', '6392', '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], 'redis');
  const key = execFileSync(SERVER, ['keys', 'add', '--data-dir', `${dir}/origin`, '--channel', '77'])
    .toString().trim().split('\n').pop();
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18360', '--ftl-port', '18364', '--webrtc-port', '20360',
    '--media-ports', '19360-19369', '--data-dir', `${dir}/origin`, '--role', 'origin', ...CLUSTER], 'origin');
  start(SERVER, ['--addr', '127.0.0.1', '--http-port', '18370', '--ftl-port', '18374', '--webrtc-port', '20370',
    '--media-ports', '19370-19379', '--data-dir', `${dir}/edge`, '--role', 'edge', ...CLUSTER], 'edge');
  await until('both nodes in the directory', 15000,
    async () => (await json(`${ORIGIN}/api/streams`)).cluster.nodes.length === 2);

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  await publishLayers(browser, ORIGIN, 77, key);
  let info = null;
  await until('three layers sending at the origin', 30000, async () => {
    info = await stream(ORIGIN);
    return info?.layers?.length === 3 && info.layers.every((l) => l.active && l.height);
  }).catch(() => { throw new Error(`origin layers: ${JSON.stringify(info?.layers)}`); });
  summary.originLayers = info.layers.map((l) => ({ id: l.id, height: l.height }));

  // The watch page on the origin: its session is placed on the edge.
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('console', (m) => process.stderr.write(`[viewer] ${m.text()}\n`));
  const opened = Date.now();
  await page.goto(`${ORIGIN}/watch/77`);
  await page.waitForFunction(() => (window.itg?.stats?.framesDecoded || 0) > 10, null, { timeout: 20000 });
  summary.firstFramesMs = Date.now() - opened;
  const location = await page.evaluate(() => window.itg.player.location || '');
  if (!location.startsWith(`${EDGE}/whep/77/`)) throw new Error(`the session is not on the edge: ${location}`);
  let edge = null;
  await until('three layers at the edge, its viewer estimating', 15000, async () => {
    edge = await stream(EDGE);
    return edge?.layers?.length === 3 && edge.estimating_viewers === 1;
  }).catch(() => { throw new Error(`edge: ${JSON.stringify(edge)}`); });
  summary.edgeLayers = edge.layers.map((l) => ({ id: l.id, height: l.height, viewers: l.viewers }));

  // Its estimate at the edge carries it to the top layer.
  await until('the edge viewer on the top layer', 30000, async () => (await width()) === 1280);
  summary.topAfterMs = Date.now() - opened;
  edge = await stream(EDGE);
  summary.edgeTrials = [edge.layer_trials, edge.layer_trials_failed];

  // The quality menu: the smallest layer, at the edge.
  await until('the quality menu', 5000, () => page.evaluate(() => !document.getElementById('quality-box').hidden));
  const smallest = summary.originLayers[0];
  await page.selectOption('#quality', String(smallest.id));
  const chosenAt = Date.now();
  await until('the chosen smallest layer', 8000, async () => (await width()) === 320);
  summary.smallestAfterMs = Date.now() - chosenAt;
  edge = await stream(EDGE);
  summary.edgeViewersPerLayer = edge.layers.map((l) => l.viewers);
  if (edge.layers[0].viewers !== 1) throw new Error(`edge viewers per layer ${summary.edgeViewersPerLayer}`);
  await page.screenshot({ path: `${ARTIFACTS}/cluster-simulcast.png` });
  writeFileSync(join(ARTIFACTS, 'cluster-simulcast-summary.json'), JSON.stringify(summary, null, 2));
  console.log(JSON.stringify(summary));
} catch (e) {
  error = e;
} finally {
  console.error(JSON.stringify(summary));
  await finish({ error, name: 'cluster simulcast', page, browser, dir, artifacts: ARTIFACTS });
}
