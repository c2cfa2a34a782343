// The page end to end in headless Chromium on WebGPU (SwiftShader: a slow CPU adapter, so a tiny
// network and batch): it trains the 2D toy for a few hundred steps and checks that both losses fell
// and that IMM's samples moved toward the data; moves the steps slider and checks the picture changed;
// saves the weights and loads them back; refuses a corrupt weights file with a message; saves a
// screenshot. Any console error or Rust panic fails it.
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { withPage } from './harness.mjs';

const STEPS = Number(process.env.PAGE_TEST_STEPS ?? 200);
const SCREENSHOT = process.env.PAGE_SCREENSHOT ?? `${process.env.CARGO_TARGET_DIR ?? '/tmp'}/imm-page.png`;
const failures = [];
const check = (ok, what) => {
  console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};

const URL = 'index.html?toy=moons&steps=2&seed=0&batch=64&lr=0.003&hidden=32&blocks=1&backend=webgpu';
await withPage(URL, async (page, problems) => {
  const timeout = 600_000;
  const text = async (id) => (await page.locator(`#${id}`).textContent()).trim();
  const number = async (id) => Number((await text(id)).replace(/,/g, ''));
  const samplesSeen = () => page.evaluate(() => window.__imm.samples?.paths.length ?? 0);

  await page.waitForFunction(() => window.__imm.ready && window.__imm.samples, null, { timeout });
  check((await text('adapter')) !== '–', `the performance panel names the adapter: ${await text('adapter')}`);
  const before = Number(await text('energy-imm'));

  const started = Date.now();
  await page.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction((n) => Number(document.getElementById('nsteps').textContent) >= n, STEPS, { timeout });
  await page.getByRole('button', { name: 'Pause' }).click();
  const seconds = (Date.now() - started) / 1000;
  const steps = await number('nsteps');
  console.log(`  trained ${steps} steps (${await text('nimg')} images) in ${seconds.toFixed(0)} s, ${await text('ms-train')} ms per step`);
  // The sampling that follows a pause: wait until the records stop growing and samples arrive.
  await page.waitForTimeout(1500);
  const records = await page.evaluate(() => window.__imm.records);
  const mean = (rs, m) => rs.reduce((s, r) => s + r[m].loss, 0) / rs.length;
  const k = Math.max(1, Math.floor(records.length / 4));
  for (const m of ['imm', 'fm']) {
    const [first, last] = [mean(records.slice(0, k), m), mean(records.slice(-k), m)];
    check(last < first, `${m} loss fell: ${first.toPrecision(4)} -> ${last.toPrecision(4)}`);
  }
  await page.waitForFunction(() => document.getElementById('energy-imm').textContent !== '–', null, { timeout });
  const after = Number(await text('energy-imm'));
  check(after < 0.7 * before, `IMM's samples moved toward the data: energy distance ${before} -> ${after}`);

  const picture = () => page.locator('#imm-canvas').evaluate((c) => c.toDataURL());
  const twoSteps = await picture();
  const slider = page.getByRole('slider', { name: 'Sampling steps' });
  const seen = await samplesSeen();
  await slider.fill('1');
  await page.waitForFunction(() => window.__imm.samples?.steps === 1, null, { timeout });
  check((await samplesSeen()) !== seen && (await picture()) !== twoSteps, 'moving Sampling steps to 1 redrew the samples');
  check((await page.locator('#steps-out').textContent()) === '1' && page.url().includes('steps=1'), 'the slider value is shown and kept in the URL');

  const download = page.waitForEvent('download', { timeout });
  await page.getByRole('button', { name: 'Save weights' }).click();
  const saved = await (await download).path();
  await page.getByLabel('Load weights').setInputFiles(saved);
  await page.waitForFunction(() => document.getElementById('status').dataset.loaded === 'yes', null, { timeout });
  check((await text('error')) === '', 'saved weights load back without an error');

  await page.getByLabel('Load weights').setInputFiles({
    name: 'broken.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from('this is not a weights file'),
  });
  await page.waitForFunction(() => document.getElementById('error').textContent !== '', null, { timeout });
  const message = await text('error');
  check(/weights file/.test(message), `a corrupt weights file is refused with a message: "${message}"`);

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  writeFileSync(SCREENSHOT, await page.screenshot({ fullPage: true }));
  console.log(`  screenshot: ${SCREENSHOT}`);
  for (const p of problems) failures.push(p);
});

if (failures.length) {
  console.error(`page test: FAILED\n${failures.join('\n')}`);
  process.exit(1);
}
console.log('page test: passed');
