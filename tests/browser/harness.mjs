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

// Opens `path`, waits for `window.__result` (set by the page when done) and returns it with the
// problems seen in the console; saves a screenshot to `screenshot` when given.
export async function runPage(path, { timeoutMs = 600_000, screenshot } = {}) {
  const server = await serve();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/lib/chromium/chromium', headless: true, args: FLAGS,
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => {
      const text = msg.text();
      if (msg.type() === 'error' || text.includes('panicked at')) problems.push(`console ${msg.type()}: ${text}`);
      else console.log(`  [page] ${text}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    const url = `http://127.0.0.1:${server.address().port}/${path}`;
    await page.goto(url);
    await page.waitForFunction(() => window.__result !== undefined, null, { timeout: timeoutMs });
    const result = await page.evaluate(() => window.__result);
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    return { result, problems };
  } finally {
    await browser.close();
    server.close();
  }
}
