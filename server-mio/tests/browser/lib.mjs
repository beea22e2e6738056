// Helpers shared by the browser scripts: child processes, bounded waits.
import { spawn } from 'node:child_process';

export const children = [];
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };

export function start(bin, args, name) {
  const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
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

/** Chromium as the tests run it: loopback WebRTC allowed, autoplay without a gesture. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'];
