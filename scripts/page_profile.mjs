// Where the page's CPU training step goes: runs the single-threaded wasm's image training
// (mnist-tiny, batch 16, as the page's "Train on MNIST here") in Node's V8, under V8's sampling
// profiler, and prints ms per step and the functions with the most samples of their own.
// Usage: node scripts/page_profile.mjs [PKG_DIR] [CALLS]. PKG_DIR defaults to pkg/; for function
// names, make one without wasm-opt (which strips them):
//   wasm-bindgen --target web --no-typescript --out-dir /tmp/pkg-names \
//     $CARGO_TARGET_DIR/wasm32-unknown-unknown/release/imm.wasm
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = resolve(new URL('..', import.meta.url).pathname);
const pkg = resolve(process.argv[2] ?? `${root}/pkg`);
const calls = Number(process.argv[3] ?? 6);
const { default: init, ImageTrainer } = await import(pathToFileURL(`${pkg}/imm.js`).href);
await init({ module_or_path: readFileSync(`${pkg}/imm_bg.wasm`) });
const images = readFileSync(`${root}/www/data/mnist-4k-images-idx3-ubyte.gz`);
const trainer = await ImageTrainer.create(images, new Uint8Array(), 'mnist-tiny', 'cpu', 16, 0);
await trainer.train(1, 0); // warm-up: compilation, first allocations

const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 500 });
await session.post('Profiler.start');
const stepsPerCall = 4;
for (let i = 0; i < calls; i++) {
  const start = performance.now();
  await trainer.train(stepsPerCall, 0);
  console.log(`call ${i + 1}: ${((performance.now() - start) / stepsPerCall).toFixed(1)} ms per step`);
}
const { profile } = await session.post('Profiler.stop');

// A SIMD kernel shows as macerator's generic `Arch::dispatch`: it is counted for the nearest caller
// of this crate or burn's, through iterator adapters.
const own = new Map();
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n);
const name = (n) => n.callFrame.functionName.replace(/::h[0-9a-f]{16}$/, '');
for (const id of profile.samples) {
  let node = byId.get(id);
  let label = name(node) || '(other)';
  if (label.includes('Arch::dispatch')) {
    while (node && !/^<?(imm|burn)/.test(name(node))) node = parent.get(node.id);
    label = node ? `${name(node)} (SIMD)` : label;
  }
  own.set(label, (own.get(label) ?? 0) + 1);
}
console.log('\nshare of samples, own time:');
for (const [name, n] of [...own].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
  console.log(`${((100 * n) / profile.samples.length).toFixed(1).padStart(5)}%  ${name.slice(0, 120)}`);
}
