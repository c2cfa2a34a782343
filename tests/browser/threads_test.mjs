// The page's CPU backend with and without threads. Served cross-origin isolated (as
// scripts/serve.mjs serves it) the page loads its threaded build and runs rayon on one web worker
// per core; served without those headers, its single-threaded build. Both train mnist-tiny's
// network from the same seed on the same batches, so their first losses must agree (only the order
// of sums differs). Any console error or Rust panic fails it.
import { checks, withPage } from './harness.mjs';

const { check, failIf, finish } = checks('threads test');

const firstRecords = (isolated) => withPage('index.html?mode=images&steps=1&seed=0&backend=cpu', async (page, problems) => {
  const timeout = 300_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByRole('button', { name: 'Train on MNIST here' }).click();
  await page.waitForFunction(() => window.__imm.imageRecords.length >= 2, null, { timeout });
  await page.getByRole('button', { name: 'Pause training' }).click();
  const seen = await page.evaluate(() => ({
    threads: window.__imm.threads,
    cores: navigator.hardwareConcurrency,
    isolated: crossOriginIsolated,
    adapter: document.getElementById('adapter').textContent,
    records: window.__imm.imageRecords.slice(0, 2),
  }));
  failIf(problems);
  return seen;
}, { isolated });

const threaded = await firstRecords(true);
const single = await firstRecords(false);
check(threaded.isolated && !single.isolated, 'the server sends the isolation headers, or not when asked');
check(threaded.cores < 2 || threaded.threads === threaded.cores, `isolated: ${threaded.threads} threads on ${threaded.cores} cores`);
check(threaded.cores < 2 || threaded.adapter === `CPU (WebAssembly, ${threaded.cores} threads)`, `the page says so: "${threaded.adapter}"`);
check(single.threads === 1 && single.adapter === 'CPU (WebAssembly)', `not isolated: one thread ("${single.adapter}")`);
const [a, b] = [threaded.records[0], single.records[0]];
const gap = Math.abs(a.loss - b.loss) / b.loss;
check(a.nimg === 16 && b.nimg === 16 && gap < 1e-4, `the first step's loss agrees: ${a.loss} threaded, ${b.loss} single (relative ${gap.toExponential(1)})`);
finish();
