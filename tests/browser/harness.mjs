// Drives headless Chromium on WebGPU (SwiftShader without a GPU) through playwright-core, against
// a static server of the project root. A page fails its test on any console error, page error or
// Rust panic message: WebGPU validation errors are only logged there.
import { chromium } from 'playwright-core';
import { serve } from '../../scripts/serve.mjs';

const FLAGS = [
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-angle=swiftshader',
  '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--disable-quic',
];

// Opens `path` in a fresh headless Chromium and runs `fn(page, problems)`; `problems` collects
// console errors, page errors and Rust panic messages as they happen. The browser is closed after.
// The server sends the cross-origin isolation headers unless `isolated` is false.
export async function withPage(path, fn, { isolated = true } = {}) {
  const server = await serve(0, { isolated });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/lib/chromium/chromium', headless: true, args: FLAGS,
  });
  const problems = [];
  try {
    const page = await browser.newPage({ acceptDownloads: true });
    page.on('console', (msg) => {
      const text = msg.text();
      if (msg.type() === 'error' || text.includes('panicked at')) problems.push(`console ${msg.type()}: ${text}`);
      else console.log(`  [page] ${text}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    await page.goto(`http://127.0.0.1:${server.address().port}/${path}`);
    return await fn(page, problems);
  } finally {
    await browser.close();
    server.close();
  }
}

// Opens `path`, waits for `window.__result` (set by the page when done) and returns it with the
// problems seen in the console.
export async function runPage(path, { timeoutMs = 600_000 } = {}) {
  return withPage(path, async (page, problems) => {
    await page.waitForFunction(() => window.__result !== undefined, null, { timeout: timeoutMs });
    return { result: await page.evaluate(() => window.__result), problems };
  });
}

// A test's named checks: each prints ok or FAIL; `finish` exits non-zero after any failure, the
// console problems given to `failIf` included.
export function checks(name) {
  const failures = [];
  return {
    check(ok, what) {
      console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}`);
      if (!ok) failures.push(what);
    },
    failIf(list) {
      failures.push(...list);
    },
    finish() {
      if (failures.length) {
        console.error(`${name}: FAILED\n${failures.join('\n')}`);
        process.exit(1);
      }
      console.log(`${name}: passed`);
    },
  };
}
