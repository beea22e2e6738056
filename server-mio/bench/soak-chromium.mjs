// The soak's Chromium viewers: opens each watch page given for SECONDS, then closes. Runs from
// server-mio/tests/browser (playwright-core) inside the soak's network namespace.
//   node soak-chromium.mjs URL [URL...] SECONDS
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const seconds = Number(args.pop());
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const pages = await Promise.all(args.map(async (url) => {
    const p = await browser.newPage();
    await p.goto(url);
    return p;
  }));
  await new Promise((r) => setTimeout(r, seconds * 1000));
  for (const p of pages) {
    const s = await p.evaluate(() => window.itg?.stats).catch(() => null);
    console.log(JSON.stringify({ url: p.url(), framesDecoded: s?.framesDecoded ?? 0 }));
  }
} finally {
  await browser.close();
}
