// The page and the command line train the same weights from the same seed and settings: they draw
// the weights and the data from the run's seed in the same way (Rust's `Seeds`) and run the same
// training loop. On the page's CPU backend, the first metrics record of the 2D playground (every
// method on moons, two at a time) and of image training (mnist-tiny on the page's MNIST subset) must equal
// the first record of `imm train` with the same preset, seed and one step (only the order of sums
// may differ: 1e-4 relative). Any console error or Rust panic fails it.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('same run test');
const imm = join(process.env.CARGO_TARGET_DIR ?? 'target', 'release', 'imm');
const scratch = mkdtempSync(join(tmpdir(), 'imm-same-run-'));

// The first record of `imm train` with `args` (one step), written to metrics.jsonl.
function firstRecord(name, args) {
  const out = join(scratch, name);
  execFileSync(imm, ['train', ...args, '--seed', '0', '--device', 'cpu', '--eval-steps', '1', '--out', out], { stdio: 'pipe' });
  return JSON.parse(readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n')[0]);
}

const close = (a, b) => Math.abs(a - b) <= 1e-4 * Math.abs(b);

// 2D: moons' batch is 512, so 0.512 kimg is one step. Every method, two at a time as the page
// trains them (the default pair first, then pairs picked in the URL).
for (const methods of [null, 'meanflow,ct', 'shortcut,imm']) {
  const names = (methods ?? 'imm,fm').split(',');
  const cli = names.map((m) => firstRecord(`moons-${m}-${methods}`, ['--preset', 'moons', '--method', m, '--kimg', '0.512']));
  const query = methods ? `&methods=${methods}` : '';
  const page2d = await withPage(`index.html?toy=moons&steps=1&seed=0&backend=cpu${query}`, async (page, problems) => {
    const timeout = 300_000;
    await page.waitForFunction(() => window.__imm.ready, null, { timeout });
    await page.getByRole('button', { name: 'Step', exact: true }).click();
    await page.waitForFunction(() => window.__imm.records.length >= 1, null, { timeout });
    failIf(problems);
    return page.evaluate(() => ({ record: window.__imm.records[0], chosen: window.__imm.chosen }));
  });
  check(page2d.chosen.join(',') === names.join(','), `the page trains ${page2d.chosen.join(' and ')}`);
  names.forEach((m, i) => {
    const [a, b] = [page2d.record[i ? 'b' : 'a'], cli[i]];
    check(a.nimg === b.nimg && close(a.loss, b.loss), `2D ${m}: the page's first loss ${a.loss} at ${a.nimg} images, the command line's ${b.loss} at ${b.nimg}`);
  });
}

// Images: the page's MNIST subset as the command line's data folder; mnist-tiny's batch is 16.
const data = join(scratch, 'data');
mkdirSync(data);
copyFileSync('www/data/mnist-4k-images-idx3-ubyte.gz', join(data, 'train-images-idx3-ubyte.gz'));
const cliImages = firstRecord('mnist', ['--preset', 'mnist-tiny', '--kimg', '0.016', '--data-dir', data]);
const pageImages = await withPage('index.html?mode=images&steps=1&seed=0&backend=cpu', async (page, problems) => {
  const timeout = 300_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByRole('button', { name: 'Train on MNIST here' }).click();
  await page.waitForFunction(() => window.__imm.imageRecords.length >= 1, null, { timeout });
  await page.getByRole('button', { name: 'Pause training' }).click();
  failIf(problems);
  return page.evaluate(() => window.__imm.imageRecords[0]);
});
check(pageImages.nimg === cliImages.nimg && close(pageImages.loss, cliImages.loss),
  `images: the page's first loss ${pageImages.loss} at ${pageImages.nimg} images, the command line's ${cliImages.loss} at ${cliImages.nimg}`);

rmSync(scratch, { recursive: true, force: true });
finish();
