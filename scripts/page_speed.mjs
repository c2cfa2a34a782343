// The page's image training speed on its CPU backend, threaded and single-threaded side by side:
// headless Chromium trains mnist-tiny's network (batch 16) in the page served with and without
// cross-origin isolation, alternating, and prints seconds per thousand images of records 2 to 6
// (the first includes warm-up). Usage: node scripts/page_speed.mjs [rounds]; needs the builds of
// scripts/web.sh build.
import { withPage } from '../tests/browser/harness.mjs';

const speed = (isolated) => withPage('index.html?mode=images&steps=1&seed=0&backend=cpu', async (page, problems) => {
  const timeout = 600_000;
  await page.waitForFunction(() => window.__imm.ready, null, { timeout });
  await page.getByRole('button', { name: 'Train on MNIST here' }).click();
  await page.waitForFunction(() => window.__imm.imageRecords.length >= 7, null, { timeout });
  const { threads, records } = await page.evaluate(() => ({ threads: window.__imm.threads, records: window.__imm.imageRecords }));
  if (problems.length) throw new Error(problems.join('\n'));
  return { isolated, threads, sec_per_kimg: records.slice(1, 6).map((r) => Number(r.sec_per_kimg.toFixed(2))) };
}, { isolated });

const rounds = Number(process.argv[2] ?? 2);
for (let round = 1; round <= rounds; round++) {
  for (const isolated of [true, false]) console.log(JSON.stringify({ round, ...(await speed(isolated)) }));
}
