// The fused MMD kernels equal the reference ops (values and gradients, relative error <= 1e-4) in
// headless Chromium on WebGPU, over random shapes with every M from 1 to 16.
import { runPage } from './harness.mjs';

const TOLERANCE = 1e-4;
const CASES = 16;
const { result, problems } = await runPage(`www/tests/fused-mmd.html?seed=3&cases=${CASES}&max_dim=80`);
const failures = [...problems];
if (result.error) failures.push(`page: ${result.error}`);
const rows = result.rows ?? [];
if (rows.length < CASES) failures.push(`expected at least ${CASES} shapes, got ${rows.length}`);
// A non-finite error arrives as null.
const within = (e) => Number.isFinite(e) && e <= TOLERANCE;
for (const r of rows) {
  const line = `[${r.shape.join(', ')}] value ${r.value_error} gradient ${r.gradient_error}`;
  console.log(`  ${line}`);
  if (!within(r.value_error) || !within(r.gradient_error)) failures.push(`over tolerance: ${line}`);
}
if (failures.length) {
  console.error(`browser fused MMD: FAILED\n${failures.join('\n')}`);
  process.exit(1);
}
console.log(`browser fused MMD: ${rows.length} shapes within ${TOLERANCE}`);
