// Image training on the page, in headless Chromium on the page's CPU backend (SwiftShader's WebGPU
// is far too slow for a convolutional network): it trains mnist-tiny's network with IMM on the
// packed MNIST subset for a few steps, pauses, and checks the progress, the loss, the grid of the
// EMA weights and its live quality number; then trains on CIFAR-10 batch files chosen on the page
// (synthetic ones) and refuses a truncated one. Any console error or Rust panic fails it.
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('image training test');

await withPage('index.html?mode=images&steps=1&seed=0&backend=cpu', async (page, problems) => {
  const timeout = 300_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByLabel('Number of images').selectOption('16');
  await page.getByRole('button', { name: 'Train on MNIST here' }).click();
  await page.waitForFunction(() => window.__imm.imageRecords.length >= 4, null, { timeout });
  await page.evaluate(() => { window.__imm.imageGrid = null; });
  await page.getByRole('button', { name: 'Pause training' }).click();
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

  // CIFAR-10 batch files chosen on the page (synthetic records in the real binary format).
  const count = 48;
  const cifar = Buffer.alloc(count * 3073);
  for (let r = 0; r < count; r++) {
    cifar[r * 3073] = r % 10;
    for (let i = 1; i < 3073; i++) cifar[r * 3073 + i] = (r * 37 + i * (1 + Math.floor((i - 1) / 1024))) % 256;
  }
  await page.getByLabel('Train on CIFAR-10 batch files').setInputFiles({ name: 'data_batch_1.bin', mimeType: 'application/octet-stream', buffer: cifar });
  await page.waitForFunction(() => window.__imm.imageRecords.length >= 2, null, { timeout });
  await page.evaluate(() => { window.__imm.imageGrid = null; });
  await page.getByRole('button', { name: 'Pause training' }).click();
  await page.waitForFunction(() => window.__imm.imageGrid, null, { timeout });
  const colour = await page.evaluate(() => {
    const { rgba, width } = window.__imm.imageGrid;
    let differ = 0;
    for (let i = 0; i < rgba.length; i += 4) if (rgba[i] !== rgba[i + 1] || rgba[i + 1] !== rgba[i + 2]) differ++;
    return { differ, width };
  });
  check(colour.width === 4 * 33 + 1 && colour.differ > 100, `the CIFAR-10 model draws a grid of 32 px colour images (${colour.differ} coloured pixels)`);
  check(/Training cifar10-tiny/.test(await page.locator('#image-info').textContent()), 'the page says what it trains');
  await page.getByLabel('Train on CIFAR-10 batch files').setInputFiles({ name: 'broken.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(100) });
  await page.waitForFunction(() => document.getElementById('error').textContent !== '', null, { timeout });
  check(/whole CIFAR-10 records/.test(await page.locator('#error').textContent()), `a truncated batch file is refused: "${await page.locator('#error').textContent()}"`);
  failIf(problems);
});

finish();
