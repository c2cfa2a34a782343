// Both fused MMD implementations (WGSL, CubeCL) equal the reference ops (values and gradients,
// relative error <= 1e-4) in headless Chromium on WebGPU, over random shapes with every M 1 to 16.
import { runPage } from './harness.mjs';

const TOLERANCE = 1e-4;
const CASES = 16;
const { result, problems } = await runPage(`www/tests/fused-mmd.html?seed=3&cases=${CASES}&max_dim=80`);
const failures = [...problems];
if (result.error) failures.push(`page: ${result.error}`);
const rows = result.rows ?? [];
if (rows.length < 2 * CASES) failures.push(`expected at least ${CASES} shapes for each implementation, got ${rows.length} rows`);
// A non-finite error arrives as null.
const within = (e) => Number.isFinite(e) && e <= TOLERANCE;
for (const r of rows) {
  const line = `${r.kernels} [${r.shape.join(', ')}] value ${r.value_error} gradient ${r.gradient_error}`;
  console.log(`  ${line}`);
  if (!within(r.value_error) || !within(r.gradient_error)) failures.push(`over tolerance: ${line}`);
}
if (failures.length) {
  console.error(`browser fused MMD: FAILED\n${failures.join('\n')}`);
  process.exit(1);
}
console.log(`browser fused MMD: ${rows.length} (implementation, shape) pairs within ${TOLERANCE}`);
