// The page's choice of methods, on its CPU backend. 2D: the two methods named in the URL are the
// ones trained, shown and kept in the URL; picking another trains it from scratch, picking the
// other side's method swaps the two; a method that cannot take the steps (a shortcut model's 3)
// says why in place of its number while the other still samples; a saved file loads back its
// methods. Images: a card of every method (the models of $IMM_PAGE_METHOD_MODELS, colon-separated,
// which scripts/test.sh trains briefly) loads and samples a grid. Any console error or Rust panic
// fails it.
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('methods test');
const timeout = 300_000;

await withPage('index.html?toy=moons&steps=2&seed=0&backend=cpu&methods=meanflow,shortcut', async (page, problems) => {
  const text = async (id) => (await page.locator(`#${id}`).textContent()).trim();
  const chosen = () => page.evaluate(() => window.__imm.chosen.join(','));
  await page.waitForFunction(() => window.__imm.ready && window.__imm.samples, null, { timeout });
  const options = await page.getByLabel('Left method', { exact: true }).locator('option').allTextContents();
  check(options.length === 5 && options.includes('MeanFlow') && options.includes('consistency training'), `the methods come from Rust: ${options.join(', ')}`);
  check((await chosen()) === 'meanflow,shortcut' && (await text('title-a')) === 'MeanFlow' && (await text('title-b')) === 'shortcut model',
    `the URL's methods are trained and named: ${await chosen()}, "${await text('title-a')}", "${await text('title-b')}"`);
  check(await page.locator('#particles').isDisabled(), "IMM's M is disabled without IMM");
  const untrained = [Number(await text('energy-a')), Number(await text('energy-b'))];

  await page.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => Number(document.getElementById('nsteps').textContent) >= 300, null, { timeout });
  await page.getByRole('button', { name: 'Pause', exact: true }).click();
  await page.waitForFunction(() => window.__imm.samples && Number.isFinite(window.__imm.samples.energy[1]), null, { timeout });
  const records = await page.evaluate(() => window.__imm.records);
  check(records.length > 0 && records.every((r) => r.a.loss > 0 && r.b.loss > 0), `both methods' losses are recorded (${records.length} records)`);
  const [a, b] = [Number(await text('energy-a')), Number(await text('energy-b'))];
  check(a < 0.7 * untrained[0] && b < 0.7 * untrained[1], `both methods' samples moved toward the data in ${await text('nsteps')} steps: ${untrained.join(', ')} -> ${a}, ${b}`);

  await page.getByRole('slider', { name: 'Sampling steps' }).fill('3');
  await page.waitForFunction(() => window.__imm.samples?.steps === 3, null, { timeout });
  check(/1, 2, 4, \.\.\. or 128 steps/.test(await text('energy-b')), `the shortcut model says why it has no 3-step samples: "${await text('energy-b')}"`);
  check(Number(await text('energy-a')) > 0, `MeanFlow samples with 3 steps: ${await text('energy-a')}`);
  check((await text('error')) === '', 'no error for a method that cannot take the steps');

  await page.getByLabel('Right method', { exact: true }).selectOption('ct');
  await page.waitForFunction(() => window.__imm.chosen[1] === 'ct' && document.getElementById('nsteps').textContent === '0', null, { timeout });
  check(page.url().includes('methods=meanflow%2Cct') && (await text('title-b')) === 'consistency training', `a new method is trained from scratch and kept in the URL: ${page.url()}`);
  await page.getByLabel('Left method', { exact: true }).selectOption('ct');
  await page.waitForFunction(() => window.__imm.chosen.join(',') === 'ct,meanflow', null, { timeout });
  check(true, 'picking the other side\'s method swaps the two');
  await page.getByRole('button', { name: 'Step', exact: true }).click();
  await page.waitForFunction(() => window.__imm.records.length >= 1, null, { timeout });

  const download = page.waitForEvent('download', { timeout });
  await page.getByRole('button', { name: 'Save weights' }).click();
  const saved = await (await download).path();
  await page.getByLabel('Left method', { exact: true }).selectOption('imm');
  await page.waitForFunction(() => window.__imm.chosen.join(',') === 'imm,meanflow', null, { timeout });
  check(!(await page.locator('#particles').isDisabled()), "IMM's M is enabled with IMM");
  await page.getByLabel('Load weights').setInputFiles(saved);
  await page.waitForFunction(() => document.getElementById('status').dataset.loaded === 'yes', null, { timeout });
  check((await chosen()) === 'ct,meanflow' && page.url().includes('methods=ct%2Cmeanflow'), `a saved file loads back its methods: ${await chosen()}`);
  check((await text('error')) === '', 'without an error');
  failIf(problems);
});

const models = (process.env.IMM_PAGE_METHOD_MODELS ?? '').split(':').filter(Boolean);
check(models.length >= 4, `IMM_PAGE_METHOD_MODELS names a model of each method: ${models.join(', ')}`);
await withPage('index.html?mode=images&steps=2&seed=0&backend=cpu', async (page, problems) => {
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByLabel('Number of images').selectOption('16');
  for (const file of models) {
    await page.evaluate(() => (window.__imm.imageGrid = null));
    await page.getByLabel('Load an image model').setInputFiles(file);
    await page.waitForFunction(() => window.__imm.imageGrid?.steps === 2, null, { timeout });
    const info = await page.locator('#image-info').textContent();
    const method = info.match(/trained with (\w+)/)?.[1];
    const grid = await page.evaluate(() => Array.from(window.__imm.imageGrid.rgba));
    check(Boolean(method) && file.includes(method) && new Set(grid).size > 16, `${file}: a ${method} card loads and samples a grid (${new Set(grid).size} pixel values)`);
  }
  check((await page.locator('#error').textContent()) === '', 'no error');
  failIf(problems);
});

finish();
