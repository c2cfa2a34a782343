// Image training on the page, in headless Chromium on the page's CPU backend (SwiftShader's WebGPU
// is far too slow for a convolutional network): it trains mnist-tiny's network with IMM on the
// packed MNIST subset for a few steps, pauses, and checks the progress, the loss, the grid of the
// EMA weights and its live quality number. Any console error or Rust panic fails it.
import { withPage } from './harness.mjs';

const failures = [];
const check = (ok, what) => {
  console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};

await withPage('index.html?mode=images&steps=1&seed=0&backend=cpu', async (page, problems) => {
  const timeout = 300_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByLabel('Number of images').selectOption('16');
  await page.getByRole('button', { name: 'Train on MNIST here' }).click();
  await page.waitForFunction(() => window.__imm.imageRecords.length >= 4, null, { timeout });
  await page.getByRole('button', { name: 'Pause training' }).click();
  await page.evaluate(() => { window.__imm.imageGrid = null; });
  const records = await page.evaluate(() => window.__imm.imageRecords);
  const last = records.at(-1);
  check(records.every((r) => Number.isFinite(r.loss) && r.loss > 0), `finite losses: ${records.map((r) => r.loss.toFixed(4)).join(', ')}`);
  check(last.nimg === 16 * records.length, `images seen count by the batch: ${last.nimg} after ${records.length} steps`);
  check(/images seen · loss/.test(await page.locator('#image-train-status').textContent()), 'the progress is shown');
  // After the pause the EMA weights are sampled once more.
  await page.waitForFunction(() => window.__imm.imageGrid, null, { timeout });
  await page.waitForFunction(() => document.getElementById('image-quality').textContent !== '', null, { timeout });
  const grid = await page.evaluate(() => Array.from(window.__imm.imageGrid.rgba));
  check(new Set(grid).size > 16, `the grid of the weights being trained has varied pixels (${new Set(grid).size} values)`);
  check(/Classifier FID of these 16 samples: [\d.]+/.test(await page.locator('#image-quality').textContent()), 'with a live quality number');
  const steps = records.length;
  await page.waitForTimeout(1000);
  check((await page.evaluate(() => window.__imm.imageRecords.length)) <= steps + 1, 'Pause stops training');
  for (const p of problems) failures.push(p);
});

if (failures.length) {
  console.error(`image training test: FAILED\n${failures.join('\n')}`);
  process.exit(1);
}
console.log('image training test: passed');
