// Bad numbers on the page, in headless Chromium on the page's CPU backend: weights that are finite
// but absurd (±1e30, in a valid weights file of the 2D playground) make every step's loss
// non-finite; the steps are skipped, and after five in a row training pauses, says why and stays
// paused; after Reset it trains on with finite losses. Any console error or Rust panic fails it.
import { readFileSync } from 'node:fs';
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('bad numbers test');

// The pretrained moons file's names, shapes and card, with every value replaced by ±1e30 in F32.
function absurdWeights() {
  const source = readFileSync('www/models/2d-moons.safetensors');
  const length = Number(source.readBigUInt64LE(0));
  const header = JSON.parse(source.subarray(8, 8 + length).toString());
  const out = {};
  let offset = 0;
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') {
      out[name] = t;
      continue;
    }
    const count = t.shape.reduce((a, b) => a * b, 1);
    out[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + 4 * count] };
    offset += 4 * count;
  }
  let text = JSON.stringify(out);
  while ((8 + text.length) % 8) text += ' ';
  const values = new Float32Array(offset / 4).map((_, i) => (i % 2 ? 1e30 : -1e30));
  const file = Buffer.alloc(8 + text.length + offset);
  file.writeBigUInt64LE(BigInt(text.length), 0);
  file.write(text, 8);
  Buffer.from(values.buffer).copy(file, 8 + text.length);
  return file;
}

await withPage('index.html?toy=moons&steps=1&seed=0&backend=cpu', async (page, problems) => {
  const timeout = 300_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByLabel('Load weights').setInputFiles({ name: 'absurd.safetensors', mimeType: 'application/octet-stream', buffer: absurdWeights() });
  await page.waitForFunction(() => document.getElementById('status').dataset.loaded === 'yes', null, { timeout });
  await page.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => document.getElementById('error').textContent.startsWith('Training paused'), null, { timeout });
  const message = await page.locator('#error').textContent();
  check(/not finite/.test(message) && /Lower the learning rate/.test(message), `the page says why: "${message}"`);
  const steps = Number(await page.locator('#nsteps').textContent());
  await page.waitForTimeout(1500);
  check(Number(await page.locator('#nsteps').textContent()) === steps, `training stays paused (${steps} steps)`);

  await page.getByRole('button', { name: 'Reset', exact: true }).click();
  await page.waitForFunction(() => document.getElementById('nsteps').textContent === '0', null, { timeout });
  await page.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => Number(document.getElementById('nsteps').textContent) > 5, null, { timeout });
  await page.getByRole('button', { name: 'Pause', exact: true }).click();
  check((await page.locator('#error').textContent()) === '', 'the message goes when training goes on');
  const losses = await page.evaluate(() => window.__imm.records.map((r) => [r.a.loss, r.b.loss]).flat());
  check(losses.length > 0 && losses.every(Number.isFinite), `finite losses after Reset: ${losses.slice(-4).join(', ')}`);
  failIf(problems);
});

// Counts beyond what the page takes, from the URL: refused by Rust with its bounds, and the page
// goes on with the preset's settings; a network too wide to create, with the preset's network.
for (const [query, refused, what] of [
  ['batch=100000000', /the batch must be from 1 to 65536, not 100000000/, 'an oversized batch'],
  ['hidden=100000', /the network's width must be from 1 to 1024, not 100000/, 'a network too wide to create'],
]) {
  await withPage(`index.html?toy=moons&steps=1&seed=0&backend=cpu&${query}`, async (page, problems) => {
    const timeout = 300_000;
    await page.waitForFunction(() => window.__imm.ready, null, { timeout });
    await page.waitForFunction(() => document.getElementById('error').textContent !== '', null, { timeout });
    const message = await page.locator('#error').textContent();
    check(refused.test(message), `${what} is refused: "${message}"`);
    check(Number(await page.locator('#batch').inputValue()) === 512 && (await page.locator('#batch').getAttribute('max')) === '65536',
      'the preset\'s batch stays, and the input takes its bound from Rust');
    const net = await page.evaluate(() => window.__imm.net);
    check(net.hidden === 128 && net.blocks === 3, `the preset's network: ${JSON.stringify(net)}`);
    await page.getByRole('button', { name: 'Step', exact: true }).click();
    await page.waitForFunction(() => window.__imm.records.length >= 1, null, { timeout });
    failIf(problems);
  });
}

finish();
