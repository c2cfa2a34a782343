// Class-conditional models on the page, in headless Chromium on the page's CPU backend. The
// pretrained conditional MNIST model of www/models/ draws one row per class; a chosen class and
// guidance redraw from the same noise (the grid comes back exactly when the setting does), the
// classifier finds the chosen class in most samples, and the URL keeps both (a page opened at it
// shows them). Then the page trains the conditional tiny network on labelled MNIST for a few steps.
// Any console error or Rust panic fails it.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('conditional test');
const timeout = 300_000;
const SIDE = 28;
const SHOTS = process.env.PAGE_SCREENSHOTS ?? `${process.env.CARGO_TARGET_DIR ?? '/tmp'}/page-screenshots`;

const model = JSON.parse(readFileSync('www/models/models.json', 'utf8')).models.find((m) => m.preset === 'mnist-cond-tiny');
check(Boolean(model), `www/models/ ships a conditional MNIST model: ${model?.file}`);

// The grid once the page shows the given class and guidance.
async function grid(page, cls, cfg) {
  await page.waitForFunction(([c, w]) => {
    const g = window.__imm.imageGrid;
    return g && g.cls === c && g.cfg === w && (!g.quality || g.quality.n === g.n) && document.getElementById('image-status').textContent.includes('step');
  }, [cls, cfg], { timeout });
  return page.evaluate(() => ({ ...window.__imm.imageGrid, rgba: Array.from(window.__imm.imageGrid.rgba) }));
}

const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

if (model) {
  await withPage(`index.html?mode=images&steps=2&seed=0&backend=cpu&model=${model.file}`, async (page, problems) => {
    await page.waitForFunction(() => window.__imm.ready, null, { timeout });
    const all = await grid(page, 'all', 1);
    const options = await page.getByLabel('Class').locator('option').allTextContents();
    check(options.length === 11 && options[0].startsWith('all classes') && options[8] === '7', `the class picker offers all classes and the digits: ${options.join(', ')}`);
    check(all.width === 6 * (SIDE + 1) + 1 && all.height === 10 * (SIDE + 1) + 1 && all.n === 60, `all classes: one row of 6 per class (${all.width} x ${all.height} px, ${all.n} samples)`);
    check(/class-conditional/.test(await page.getByLabel('Pretrained image model').locator('option:checked').textContent()), 'the pretrained list names it class-conditional');
    mkdirSync(SHOTS, { recursive: true });
    writeFileSync(`${SHOTS}/page-conditional.png`, await page.screenshot({ fullPage: true }));

    await page.getByLabel('Class').selectOption('7');
    const seven = await grid(page, '7', 1);
    check(seven.n === 64 && !same(seven.rgba, all.rgba), 'one class fills the grid with 64 samples');
    await page.getByLabel('Guidance').fill('2');
    const guided = await grid(page, '7', 2);
    check(!same(guided.rgba, seven.rgba), 'guidance 2 redrew the grid');
    const accuracy = guided.quality?.accuracy;
    check(accuracy >= 0.8, `the classifier finds a 7 in ${(100 * accuracy).toFixed(0)}% of the guided samples`);
    check(/class accuracy \d+%/.test(await page.locator('#image-quality').textContent()), 'the page shows the class accuracy');
    check(page.url().includes('class=7') && page.url().includes('cfg=2'), `the URL keeps the class and guidance: ${page.url()}`);
    await page.getByLabel('Guidance').fill('1');
    check(same((await grid(page, '7', 1)).rgba, seven.rgba), 'back at guidance 1 the grid is the same: the same noise');
    failIf(problems);
  });

  await withPage(`index.html?mode=images&steps=1&seed=0&backend=cpu&model=${model.file}&class=3&cfg=1.5`, async (page, problems) => {
    await page.waitForFunction(() => window.__imm.ready, null, { timeout });
    const shown = await grid(page, '3', 1.5);
    check(shown.steps === 1 && (await page.getByLabel('Class').inputValue()) === '3' && (await page.getByLabel('Guidance').inputValue()) === '1.5',
      'a page opened at a URL with class=3&cfg=1.5 shows class 3 at guidance 1.5');
    check(/guidance 1\.5/.test(await page.locator('#image-status').textContent()), `its status says so: "${await page.locator('#image-status').textContent()}"`);
    failIf(problems);
  });
}

await withPage('index.html?mode=images&steps=1&seed=0&backend=cpu', async (page, problems) => {
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByLabel('Network to train').selectOption('mnist-cond-tiny');
  await page.getByRole('button', { name: 'Train on MNIST here' }).click();
  await page.waitForFunction(() => window.__imm.imageRecords.length >= 3, null, { timeout });
  await page.evaluate(() => { window.__imm.imageGrid = null; });
  await page.getByRole('button', { name: 'Pause training' }).click();
  const trained = await grid(page, 'all', 1);
  const records = await page.evaluate(() => window.__imm.imageRecords);
  check(records.every((r) => Number.isFinite(r.loss) && r.loss > 0), `finite losses with labels: ${records.map((r) => r.loss.toFixed(4)).join(', ')}`);
  check(/Training mnist-cond-tiny/.test(await page.locator('#image-info').textContent()), 'the page says it trains the conditional network');
  check(trained.height === 10 * (SIDE + 1) + 1 && (await page.getByLabel('Class').isVisible()), 'its grid has a row per class, with the class picker');
  await page.waitForFunction(() => window.__imm.imageGrid?.quality, null, { timeout });
  const accuracy = await page.evaluate(() => window.__imm.imageGrid.quality.accuracy);
  check(accuracy >= 0 && accuracy <= 1, `a class accuracy for the weights being trained: ${accuracy}`);
  failIf(problems);
});

finish();
