// The page's Web Worker: owns the wasm playground (training and sampling run here, so the page
// stays responsive) and answers the page's messages. Every call into wasm goes through one queue:
// the playground is borrowed for the whole of each async call.
// Two builds of the wasm: pkg/ (WebGPU, and the CPU backend on one thread) and pkg-threads/ (the
// CPU backend on every core, through web workers that share the wasm memory; no WebGPU). Objects on
// the CPU come from the threaded one where the page is cross-origin isolated, which shared memory
// needs, and that build is served; it is loaded on the first use of the CPU.
let wasm = null;
let cpuWasm = null;
async function loadWasm() {
  wasm = await import('../pkg/imm.js');
  await wasm.default();
}

async function lib(backend) {
  if (backend !== 'cpu') return wasm;
  if (!cpuWasm) {
    cpuWasm = wasm;
    const url = '../pkg-threads/imm.js';
    if (self.crossOriginIsolated && navigator.hardwareConcurrency > 1
      && (await fetch(url, { method: 'HEAD' }).then((r) => r.ok, () => false))) {
      const threaded = await import(url);
      await threaded.default();
      await threaded.initThreadPool(navigator.hardwareConcurrency);
      cpuWasm = threaded;
    }
    post({ type: 'threads', threads: cpuWasm.cpuThreads() });
  }
  return cpuWasm;
}

let playground = null;
let imageModel = null;
let qualityFiles = null;
let imageTrainer = null;
let imageTraining = false;
let imageLoopToken = 0; // a new image loop (or trainer) retires the older loop
let imageView = { steps: 2, seed: 0, n: 16, cls: '', cfg: 1 };
let running = false;
let chain = Promise.resolve();
let view = { steps: 2, seed: 0, samples: 400 };
let net = { hidden: 0, blocks: 0 }; // 0: the preset's
let methods = 'imm,fm'; // the two methods the playground trains

const post = (msg, transfer = []) => self.postMessage(msg, transfer);
// Lets queued messages (Pause, new settings) in between steps: on the CPU backend every await
// resolves at once, so a loop would otherwise never give the event loop a turn.
const yieldToMessages = () => new Promise((resolve) => setTimeout(resolve, 0));
const report = (e) => {
  const message = String(e?.message ?? e);
  // Errors from Rust say their kind (src/web: js). A lost GPU device fails every later call: stop
  // the loops instead of repeating the error. So does training whose numbers stopped being finite,
  // until Train is pressed.
  const kind = e?.kind ?? 'other';
  if (kind === 'device-lost' || kind === 'stopped') running = imageTraining = false;
  post({ type: 'error', message, kind });
};

// Runs `fn` after every call queued before it; errors go to the page.
function enqueue(fn) {
  chain = chain.then(fn).catch(report);
  return chain;
}

// `steps` training steps, or with 0 as many as Rust finds fit in about a quarter of a second, so
// that Pause answers quickly.
async function trainChunk(steps = 0) {
  const record = JSON.parse(await playground.train(steps, 250));
  post({ type: 'metrics', record, msPerStep: record.ms_per_step });
}

// Both methods' sampling paths; a method that cannot take these steps (a shortcut model's 3) has
// none, and says why in `refused`. `first[m]`: where method m's states start in `paths`.
async function sample() {
  const { steps, seed, samples: n } = view;
  const refused = JSON.parse(playground.stepsRefused(steps));
  const start = performance.now();
  const paths = await playground.sample(steps, n, seed);
  const sampled = refused.filter((r) => r === null).length;
  const ms = (performance.now() - start) / Math.max(1, sampled * steps);
  const data = playground.data(n, 1);
  const first = [0, refused[0] === null ? steps + 1 : 0];
  const state = (i) => paths.subarray(i * n * 2, (i + 1) * n * 2);
  const energy = refused.map((r, m) => (r === null ? wasm.energyDistance(state(first[m] + steps), data) : null));
  post({ type: 'samples', steps, n, paths, data, first, refused, energy, msPerSampleStep: ms }, [paths.buffer, data.buffer]);
}

// The playground on `toy` with the current network size and methods; one that cannot be made
// leaves the old one (if any) in place.
async function createPlayground(msg, size = net, chosen = methods) {
  const next = await (await lib(msg.backend)).Playground.create(msg.toy, msg.backend, msg.seed, size.hidden ?? 0, size.blocks ?? 0, chosen);
  playground?.free();
  playground = next;
  methods = JSON.parse(playground.getMethods()).join(',');
}

// The current image model's grid at the view's steps, seed, size, class and guidance, with its
// quality numbers.
async function sampleGrid() {
  if (!imageModel) return;
  const { steps, seed, n, cls, cfg } = imageView;
  const start = performance.now();
  const grid = await imageModel.sample(steps, n, seed, cls, cfg);
  const msPerStep = (performance.now() - start) / steps;
  const { width, n: count } = grid;
  const rgba = grid.takeRgba();
  grid.free();
  const height = rgba.length / 4 / width;
  const quality = qualityFiles ? JSON.parse(await imageModel.quality(qualityFiles.classifier, qualityFiles.reference)) : null;
  post({ type: 'image-grid', rgba, width, height, n: count, steps, seed, cls, cfg, msPerStep, quality }, [rgba.buffer]);
}

// Image training on the page: as many steps per call as Rust finds take about a quarter of a
// second (one where steps are slow), read back once per chunk, not once per step; the grid
// from the EMA weights every few seconds but at most a quarter of the time.
async function imageLoop() {
  const token = ++imageLoopToken;
  let last = performance.now();
  let cost = 0;
  while (imageTraining && token === imageLoopToken) {
    await enqueue(async () => {
      if (!imageTrainer) return;
      const record = JSON.parse(await imageTrainer.train(0, 250));
      post({ type: 'image-metrics', record, msPerStep: record.ms_per_step });
    });
    await yieldToMessages();
    if (performance.now() - last > Math.max(3000, 4 * cost)) {
      const start = performance.now();
      await enqueue(showTrainerGrid);
      cost = performance.now() - start;
      last = performance.now();
    }
  }
  await enqueue(showTrainerGrid);
}

// The grid of the trainer's EMA weights (none when a new trainer failed to start).
async function showTrainerGrid() {
  if (!imageTrainer) return;
  imageModel?.free();
  imageModel = imageTrainer.model();
  await sampleGrid();
}

// Trains while running; samples about once a second, but never more than a quarter of the time
// (sampling costs as much as training on slow adapters).
async function loop() {
  let last = 0;
  let cost = 0;
  while (running) {
    await enqueue(trainChunk);
    await yieldToMessages();
    if (performance.now() - last > Math.max(1000, 4 * cost)) {
      const start = performance.now();
      await enqueue(sample);
      cost = performance.now() - start;
      last = performance.now();
    }
  }
  await enqueue(sample);
}

self.onmessage = ({ data: msg }) => {
  switch (msg.type) {
    case 'init':
      enqueue(async () => {
        await loadWasm();
        // A network size or methods from the URL that Rust refuses are reported, and the preset's
        // network with IMM and flow matching is used.
        try {
          await createPlayground(msg, msg.net, msg.methods ?? methods);
        } catch (e) {
          report(e);
          await createPlayground(msg, {}, 'imm,fm');
        }
        net = JSON.parse(playground.getNet());
        // Settings from the URL that Rust refuses are reported; the preset's stay.
        try {
          playground.setHyper(JSON.stringify(msg.hyper ?? {}));
        } catch (e) {
          report(e);
        }
        view = { ...view, ...msg.view };
        const limits = JSON.parse(wasm.Playground.limits());
        const trainPresets = JSON.parse(wasm.ImageTrainer.presets());
        const all = JSON.parse(wasm.Playground.methods());
        post({ type: 'ready', toys: wasm.Playground.toys(), methods: all, chosen: methods.split(','), imagePresets: wasm.ImageModel.presets(), trainPresets, hyper: JSON.parse(playground.getHyper()), net, limits });
        await sample();
      });
      break;
    case 'train':
      if (!running) {
        running = true;
        loop();
      }
      break;
    case 'pause':
      running = false;
      break;
    case 'step':
      enqueue(async () => {
        await trainChunk(1);
        await sample();
      });
      break;
    case 'reset':
      enqueue(async () => {
        if (msg.points) {
          playground.useDrawn(new Float32Array(msg.points));
        } else {
          // The old playground stays until the new one exists: a failed create leaves it usable.
          await createPlayground(msg, net, msg.methods ?? methods);
        }
        if (msg.hyper) playground.setHyper(JSON.stringify(msg.hyper));
        post({ type: 'reset', hyper: JSON.parse(playground.getHyper()), chosen: methods.split(',') });
        await sample();
      });
      break;
    case 'hyper':
      enqueue(() => {
        playground.setHyper(JSON.stringify(msg.hyper));
        post({ type: 'hyper', hyper: JSON.parse(playground.getHyper()) });
      });
      break;
    case 'view':
      view = { ...view, ...msg.view };
      if (!running) enqueue(sample);
      break;
    case 'save':
      enqueue(async () => {
        const bytes = await playground.saveWeights();
        post({ type: 'saved', bytes }, [bytes.buffer]);
      });
      break;
    case 'load':
      enqueue(async () => {
        playground.loadWeights(new Uint8Array(msg.bytes));
        methods = JSON.parse(playground.getMethods()).join(',');
        post({ type: 'loaded', chosen: methods.split(',') });
        await sample();
      });
      break;
    case 'image-load':
      imageTraining = false;
      enqueue(async () => {
        imageModel?.free();
        imageModel = null;
        imageModel = await (await lib(msg.backend)).ImageModel.load(new Uint8Array(msg.bytes), msg.preset, msg.backend);
        qualityFiles = null;
        post({ type: 'image-ready', info: JSON.parse(imageModel.describe()) });
      });
      break;
    case 'image-sample':
      imageView = { steps: msg.steps, seed: msg.seed, n: msg.n, cls: msg.cls, cfg: msg.cfg };
      enqueue(sampleGrid);
      break;
    case 'image-train-start':
      imageTraining = false;
      imageLoopToken += 1;
      enqueue(async () => {
        imageTrainer?.free();
        imageTrainer = null;
        qualityFiles = null;
        imageTrainer = await (await lib(msg.backend)).ImageTrainer.create(new Uint8Array(msg.bytes), new Uint8Array(msg.labels ?? 0), msg.preset, msg.backend, msg.batch, msg.seed);
        imageModel?.free();
        imageModel = imageTrainer.model();
        post({ type: 'image-ready', info: JSON.parse(imageModel.describe()), training: true });
      });
      break;
    case 'image-train':
      // After a queued image-train-start has made (or failed to make) its trainer.
      enqueue(() => {
        if (imageTrainer && !imageTraining) {
          imageTraining = true;
          imageLoop();
        }
      });
      break;
    case 'image-pause':
      imageTraining = false;
      break;
    case 'image-quality':
      // The classifier of the model's dataset and its reference, for the live quality number.
      enqueue(async () => {
        qualityFiles = { classifier: new Uint8Array(msg.classifier), reference: new Uint8Array(msg.reference) };
      });
      break;
    default:
      report(`unknown message ${msg.type}`);
  }
};
