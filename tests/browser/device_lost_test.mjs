// A lost GPU device: while the 2D toy trains on WebGPU, the test crashes Chromium's GPU process
// (DevTools' Browser.crashGpuProcess), which loses every WebGPU device as a driver reset would. The
// page must stop, say what happened instead of failing silently, and its "continue on the CPU" link
// must bring the page back up on the CPU backend. Any console error or Rust panic fails it.
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('device lost test');

await withPage('index.html?mode=2d&toy=moons&hidden=32&blocks=1', async (page, problems) => {
  const timeout = 300_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  check((await page.locator('#adapter').textContent()).includes('swiftshader'), 'the page runs on WebGPU');
  await page.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => window.__imm.records.length >= 1, null, { timeout });
  const gpu = await page.context().browser().newBrowserCDPSession();
  await gpu.send('Browser.crashGpuProcess');
  await page.waitForFunction(() => !document.getElementById('notice').hidden, null, { timeout: 60_000 });
  const notice = await page.locator('#notice').textContent();
  check(/^The GPU device was lost \(.+\)\. The browser took the GPU away/.test(notice), `the page explains the loss: "${notice}"`);
  check(await page.getByRole('button', { name: 'Train', exact: true }).isDisabled(), 'training cannot be started on the lost device');
  const steps = await page.evaluate(() => window.__imm.records.length);
  await page.waitForTimeout(2000);
  check((await page.evaluate(() => window.__imm.records.length)) === steps, 'the training loop stopped');
  await page.getByRole('link', { name: 'continue on the CPU' }).click();
  await page.waitForFunction(() => window.__imm?.ready, null, { timeout });
  check(new URL(page.url()).searchParams.get('backend') === 'cpu', `the link reloads on the CPU backend (${page.url()})`);
  check(/^CPU \(WebAssembly(, \d+ threads)?\)$/.test(await page.locator('#adapter').textContent()), 'which the page then uses');
  failIf(problems);
});

finish();
