// Bad numbers on the page, in headless Chromium on the page's CPU backend: a learning rate far too
// high (1e30) makes the loss non-finite after one step; training pauses at the skipped step and says
// why, and stays paused; with a sane learning rate, Reset and Train it goes on with finite losses.
// Any console error or Rust panic fails it.
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('bad numbers test');

await withPage('index.html?toy=moons&steps=1&seed=0&batch=16&lr=1e30&hidden=16&blocks=1&backend=cpu', async (page, problems) => {
  const timeout = 300_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => document.getElementById('error').textContent.startsWith('Training paused'), null, { timeout });
  const message = await page.locator('#error').textContent();
  check(/not finite/.test(message) && /Lower the learning rate/.test(message), `the page says why: "${message}"`);
  const steps = Number(await page.locator('#nsteps').textContent());
  await page.waitForTimeout(1500);
  check(Number(await page.locator('#nsteps').textContent()) === steps, `training stays paused (${steps} steps)`);

  await page.getByLabel('Learning rate').fill('0.001');
  await page.getByLabel('Learning rate').dispatchEvent('change');
  await page.getByRole('button', { name: 'Reset', exact: true }).click();
  await page.waitForFunction(() => document.getElementById('nsteps').textContent === '0', null, { timeout });
  await page.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => Number(document.getElementById('nsteps').textContent) > 5, null, { timeout });
  await page.getByRole('button', { name: 'Pause', exact: true }).click();
  check((await page.locator('#error').textContent()) === '', 'the message goes when training goes on');
  const losses = await page.evaluate(() => window.__imm.records.map((r) => [r.imm.loss, r.fm.loss]).flat());
  check(losses.length > 0 && losses.every(Number.isFinite), `finite losses after the pause: ${losses.slice(-4).join(', ')}`);
  failIf(problems);
});

finish();
