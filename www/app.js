// The page's main thread: controls, pictures and text. Training and sampling run in
// www/worker.js (Rust compiled to wasm); this file only draws what it reports.

const $ = (id) => document.getElementById(id);
const DRAW = 'draw your own';
const COLORS = { a: '#1f6fd1', b: '#d9661f', data: 'rgba(90, 90, 90, 0.35)' };
const SLOTS = ['a', 'b']; // the left and the right method
const EXTENT = 1.6; // data are standardised to std 0.5: [-1.6, 1.6]^2 holds nearly all of it

// Page state; `window.__imm` lets tests read what the page shows.
const state = {
  params: new URLSearchParams(location.search),
  records: [], // {nimg, a, b}: the metrics records of the worker, for the left and right method
  methods: [], // the methods the playground trains: {name, title} (Rust's Playground.methods)
  chosen: ['imm', 'fm'], // the names of the left and right method
  samples: null, // the last `samples` message
  sampleCount: 0, // `samples` messages so far
  loadedAt: null, // sampleCount when weights were last loaded
  drawn: [],
  models: [], // the pretrained image models' cards
  toys: [], // the pretrained 2D networks' cards
  trainPresets: [], // the networks the tab trains, with their settings (Rust's ImageTrainer.presets)
  imageTrainer: null, // the preset of the worker's image trainer, if it holds one
  imageRecords: [], // its metrics records
  model: null, // the pretrained model shown, by file name
  ready: false,
  busy: false,
  threads: 1, // the CPU backend's threads, once it runs (more only where the page is cross-origin isolated)
};
window.__imm = state;

function cpuName() {
  return state.threads > 1 ? `CPU (WebAssembly, ${state.threads} threads)` : 'CPU (WebAssembly)';
}

function showError(message) {
  $('error').textContent = message;
}

function notice(message) {
  $('notice').hidden = !message;
  $('notice').textContent = message ?? '';
}

// Every later call on a lost device fails: say what happened and offer the ways on.
function deviceLost(message) {
  const link = (href, text) => Object.assign(document.createElement('a'), { href, textContent: text });
  const cpu = new URLSearchParams(location.search);
  cpu.set('backend', 'cpu');
  $('notice').hidden = false;
  $('notice').replaceChildren(
    `${message}. The browser took the GPU away from this page (a driver reset or crash, a GPU that was removed, or the system reclaiming it), and nothing more can run on it here. `,
    link(location.href, 'Reload the page'),
    ' to start again on the GPU, or ',
    link(`?${cpu}`, 'continue on the CPU'),
    '.',
  );
  for (const id of ['train', 'step', 'image-train']) $(id).disabled = true;
}

// State in the URL: mode, distribution, the two methods, steps, seed, the backend, and a
// conditional model's class and guidance.
function saveUrl() {
  const p = new URLSearchParams(state.params);
  p.set('mode', mode());
  p.set('toy', $('toy').value || p.get('toy') || 'checkerboard');
  p.set('methods', state.chosen.join(','));
  p.set('steps', $('steps').value);
  p.set('seed', $('seed').value);
  p.set('backend', $('backend').value);
  if (mode() === 'images' && state.model) p.set('model', state.model);
  else p.delete('model');
  if (mode() === 'images' && conditional()) {
    p.set('class', $('class').value);
    p.set('cfg', $('cfg').value);
  } else {
    p.delete('class');
    p.delete('cfg');
  }
  history.replaceState(null, '', `?${p}`);
}

async function webgpuAdapter() {
  if (!navigator.gpu) return { error: 'this browser has no WebGPU (try a recent Chrome, Edge or Safari, or Firefox with WebGPU enabled)' };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { error: 'WebGPU is present but offered no adapter (it may be disabled for this GPU or driver)' };
    const info = adapter.info ?? {};
    const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'WebGPU adapter';
    return { name: adapter.isFallbackAdapter || info.isFallbackAdapter ? `${name} (software)` : name };
  } catch (e) {
    return { error: `WebGPU failed to start: ${e.message}` };
  }
}

// --- pictures -------------------------------------------------------------------------------

function toCanvas(canvas, x, y) {
  const s = canvas.width / (2 * EXTENT);
  return [(x + EXTENT) * s, (EXTENT - y) * s];
}

function scatter(canvas, data, points, color, extra = []) {
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = '#fff';
  g.fillRect(0, 0, canvas.width, canvas.height);
  const dots = (xy, fill, r) => {
    g.fillStyle = fill;
    for (let i = 0; i + 1 < xy.length; i += 2) {
      const [px, py] = toCanvas(canvas, xy[i], xy[i + 1]);
      g.fillRect(px - r, py - r, 2 * r, 2 * r);
    }
  };
  dots(data, COLORS.data, 1.5);
  dots(points, color, 1.6);
  dots(extra, '#111', 2.5);
}

function drawPlots() {
  const s = state.samples;
  if (!s) return;
  const i = Math.min(Number($('time').value), s.steps);
  const per = s.n * 2;
  // A method that cannot sample with these steps shows the data alone.
  const path = (m, k) => (s.refused[m] === null ? s.paths.subarray((s.first[m] + k) * per, (s.first[m] + k + 1) * per) : []);
  const drawn = $('toy').value === DRAW ? state.drawn.flat() : [];
  scatter($('a-canvas'), s.data, path(0, i), COLORS.a, drawn);
  scatter($('b-canvas'), s.data, path(1, i), COLORS.b);
}

// A method's name in words.
const titleOf = (name) => state.methods.find((m) => m.name === name)?.title ?? name;

// The chosen methods in the selects, captions and settings (IMM's M and k reach IMM alone).
function showMethods(chosen) {
  state.chosen = chosen;
  SLOTS.forEach((slot, m) => {
    $(`method-${slot}`).value = chosen[m];
    $(`title-${slot}`).textContent = titleOf(chosen[m]);
    $(`loss-title-${slot}`).textContent = titleOf(chosen[m]);
  });
  for (const id of ['particles', 'k']) $(id).disabled = !chosen.includes('imm');
  pretrained2d();
  saveUrl();
}

// A record's loss as text; none (null) when every step since the last record was skipped.
const lossText = (loss, format) => (Number.isFinite(loss) ? format(loss) : 'skipped (not finite)');

// One panel per method: the loss (faint) and its moving average against images seen.
function drawLoss() {
  const canvas = $('loss-canvas');
  const g = canvas.getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, canvas.width, canvas.height);
  const recs = state.records;
  if (recs.length < 2) return;
  const w = canvas.width / 2;
  SLOTS.forEach((slot, panel) => {
    const x0 = panel * w + 40, x1 = (panel + 1) * w - 10, y0 = 20, y1 = canvas.height - 20;
    const raw = recs.map((r) => r[slot].loss);
    const smooth = [];
    raw.forEach((v, i) => smooth.push(i ? 0.9 * smooth[i - 1] + 0.1 * v : v));
    const lo = Math.min(...smooth), hi = Math.max(...smooth);
    const nmax = recs[recs.length - 1].nimg;
    const px = (i) => x0 + ((x1 - x0) * recs[i].nimg) / nmax;
    const py = (v) => y1 - ((y1 - y0) * (v - lo)) / (hi - lo || 1);
    g.strokeStyle = '#ccc';
    g.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const line = (vals, style, width) => {
      g.strokeStyle = style;
      g.lineWidth = width;
      g.beginPath();
      vals.forEach((v, i) => (i ? g.lineTo(px(i), py(Math.min(hi, Math.max(lo, v)))) : g.moveTo(px(i), py(v))));
      g.stroke();
    };
    line(raw, panel ? 'rgba(217,102,31,0.25)' : 'rgba(31,111,209,0.25)', 1);
    line(smooth, COLORS[slot], 2);
    g.fillStyle = '#333';
    g.font = '12px sans-serif';
    g.fillText(`${titleOf(state.chosen[panel])} loss (moving average)`, x0, 14);
    g.fillText(hi.toPrecision(3), x0 - 38, y0 + 10);
    g.fillText(lo.toPrecision(3), x0 - 38, y1);
    g.fillText(`${nmax.toLocaleString('en')} images`, x1 - 90, canvas.height - 4);
  });
}

function timeLabel() {
  const steps = Number($('steps').value);
  const i = Number($('time').value);
  $('time-out').textContent = i === 0 ? 'noise' : i >= steps ? 'samples' : `after step ${i} of ${steps}`;
}

// --- the worker -------------------------------------------------------------------------------

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
worker.onerror = (e) => showError(`the training worker failed: ${e.message ?? 'see the console'}`);

const send = (msg, transfer) => worker.postMessage(msg, transfer);

function hyperFromInputs() {
  return {
    particles: Number($('particles').value),
    batch: Number($('batch').value),
    lr: Number($('lr').value),
    k: Number($('k').value),
  };
}

function showHyper(h) {
  $('particles').value = h.particles;
  $('batch').value = h.batch;
  $('lr').value = h.lr;
  $('k').value = h.k;
}

function view() {
  return { steps: Number($('steps').value), seed: Number($('seed').value) };
}

worker.onmessage = ({ data: msg }) => {
  switch (msg.type) {
    case 'ready': {
      const select = $('toy');
      select.replaceChildren(...[...msg.toys, DRAW].map((t) => new Option(t, t)));
      select.value = state.params.get('toy') ?? 'checkerboard';
      // The settings' bounds are Rust's (Playground.limits).
      for (const id of ['particles', 'batch', 'lr', 'k']) {
        const [min, max] = msg.limits[id];
        Object.assign($(id), { min, max });
      }
      showHyper(msg.hyper);
      state.net = msg.net;
      // The methods the playground trains are Rust's (Playground.methods).
      state.methods = msg.methods;
      for (const slot of SLOTS) $(`method-${slot}`).replaceChildren(...msg.methods.map((m) => new Option(m.title, m.name)));
      showMethods(msg.chosen);
      $('image-preset').append(...msg.imagePresets.map((p) => new Option(p, p)));
      // The networks the tab trains, and how, are Rust's (ImageTrainer.presets).
      state.trainPresets = msg.trainPresets;
      $('image-train-preset').replaceChildren(
        ...msg.trainPresets.map((p) => new Option(`${p.name} (${p.conditional ? 'class-conditional' : 'unconditional'})`, p.name)),
      );
      describeTraining();
      state.ready = true;
      document.body.classList.add('ready');
      loadModels();
      break;
    }
    case 'threads':
      state.threads = msg.threads;
      $('backend').querySelector('option[value=cpu]').textContent = cpuName();
      if ($('backend').value === 'cpu') $('adapter').textContent = cpuName();
      break;
    case 'metrics': {
      const r = msg.record;
      // A record whose steps were all skipped (numbers not finite) has no loss to chart.
      const [a, b] = r.records;
      if (Number.isFinite(a.loss) && Number.isFinite(b.loss)) state.records.push({ nimg: a.nimg, a, b });
      $('nimg').textContent = a.nimg.toLocaleString('en');
      $('nsteps').textContent = r.steps;
      $('loss-a').textContent = lossText(a.loss, (l) => l.toPrecision(4));
      $('loss-b').textContent = lossText(b.loss, (l) => l.toPrecision(4));
      $('ms-train').textContent = msg.msPerStep.toFixed(1);
      $('img-s').textContent = Math.round(1000 / a.sec_per_kimg).toLocaleString('en');
      drawLoss();
      break;
    }
    case 'samples':
      state.samples = msg;
      state.sampleCount += 1;
      // A method that cannot sample with these steps says why in place of its number.
      SLOTS.forEach((slot, m) => ($(`energy-${slot}`).textContent = msg.refused[m] ?? msg.energy[m].toFixed(4)));
      $('ms-sample').textContent = msg.msPerSampleStep.toFixed(1);
      $('time').max = msg.steps;
      timeLabel();
      drawPlots();
      break;
    case 'reset':
      state.records = [];
      showHyper(msg.hyper);
      showMethods(msg.chosen);
      for (const id of ['nimg', 'nsteps']) $(id).textContent = '0';
      for (const id of ['loss-a', 'loss-b']) $(id).textContent = '–';
      drawLoss();
      break;
    case 'hyper':
      showHyper(msg.hyper);
      showError('');
      break;
    case 'saved': {
      const a = document.createElement('a');
      a.href = URL.createObjectURL(new Blob([msg.bytes], { type: 'application/octet-stream' }));
      a.download = `imm-2d-${$('toy').value.replace(/\W+/g, '-')}-${$('nimg').textContent.replace(/,/g, '')}img.safetensors`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      break;
    }
    case 'loaded':
      showError('');
      state.records = [];
      showMethods(msg.chosen);
      drawLoss();
      $('status').dataset.loaded = 'yes';
      state.loadedAt = state.sampleCount;
      break;
    case 'image-ready': {
      state.imageModel = msg.info;
      const card = msg.info.card;
      const trained = card ? `${card.preset ?? 'a model'} trained with ${card.method} on ${Number(card.nimg).toLocaleString('en')} images` : 'a model without a card';
      const pretrained = state.models.find((m) => m.file === state.model);
      $('image-info').textContent = msg.training
        ? `Training ${card.preset}'s network with IMM in this tab; the grid shows its EMA weights.`
        : `Loaded ${trained}: ${msg.info.channels} × ${msg.info.side} × ${msg.info.side} images.` + (pretrained ? ` ${describeCard(pretrained)}` : '');
      $('image-quality').textContent = '';
      showConditioning(msg.info.classes);
      saveUrl();
      setupQuality(msg.info.data).then(sampleImages);
      break;
    }
    case 'image-metrics': {
      const r = msg.record;
      state.imageRecords.push(r);
      $('image-train-status').textContent = `${r.nimg.toLocaleString('en')} images seen · loss ${lossText(r.loss, (l) => l.toFixed(4))} · ${(msg.msPerStep / 1000).toFixed(1)} s per step`;
      break;
    }
    case 'image-grid':
      state.imageGrid = msg;
      drawImages(msg);
      break;
    case 'error':
      if (msg.kind === 'device-lost') deviceLost(msg.message);
      else showError(msg.message);
      if (mode() === 'images') $('image-status').textContent = 'failed';
      break;
  }
};

// --- modes ------------------------------------------------------------------------------------

const mode = () => document.querySelector('input[name="mode"]:checked').value;

function showMode() {
  for (const el of document.querySelectorAll('.mode-2d')) el.hidden = mode() !== '2d';
  for (const el of document.querySelectorAll('.mode-images')) el.hidden = mode() !== 'images';
}

// New pictures for the current steps and seed: the 2D paths, or the image grid.
function refresh() {
  if (mode() === '2d') send({ type: 'view', view: view() });
  else if (state.imageModel) sampleImages();
}

function sampleImages() {
  $('image-status').textContent = 'sampling…';
  const [cls, cfg] = conditional() ? [$('class').value, Number($('cfg').value)] : ['', 1];
  send({ type: 'image-sample', steps: Number($('steps').value), seed: Number($('seed').value), n: Number($('image-count').value), cls, cfg });
}

// Whether the model shown is class-conditional (its class picker and guidance slider are shown).
const conditional = () => !$('conditioning').hidden;

// The class picker of a model with these class names (none: unconditional). The choice carries
// over between models of the same classes; the URL's is the first.
function showConditioning(classes) {
  $('conditioning').hidden = !classes.length;
  if (!classes.length) return;
  const select = $('class');
  const previous = select.options.length ? select.value : state.params.get('class') ?? 'all';
  select.replaceChildren(new Option('all classes (one row each)', 'all'), ...classes.map((name, i) => new Option(name, String(i))));
  const byName = classes.findIndex((name) => name.toLowerCase() === String(previous).toLowerCase());
  select.value = [...select.options].some((o) => o.value === previous) ? previous : byName >= 0 ? String(byName) : 'all';
}

function showGuidance() {
  const w = Number($('cfg').value);
  $('cfg-out').textContent = w === 1 ? '1 (none)' : String(w);
}

$('class').onchange = () => {
  refresh();
  saveUrl();
};
$('cfg').oninput = () => {
  showGuidance();
  refresh();
  saveUrl();
};

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.onchange = () => {
    send({ type: mode() === 'images' ? 'pause' : 'image-pause' });
    showMode();
    refresh();
    saveUrl();
  };
}

// The model cards of the pretrained weights in www/models/ (models.json, written by scripts/page_models.py).
function describeCard(m) {
  const q = m.quality;
  const fid = Object.entries(q.values).map(([k, v]) => `${k} step${k === '1' ? '' : 's'} ${v.toFixed(2)}`).join(' · ');
  const accuracy = q.accuracy
    ? `; class accuracy ${Object.entries(q.accuracy).map(([k, v]) => `${k} step${k === '1' ? '' : 's'} ${(100 * v).toFixed(1)}%`).join(' · ')}`
    : '';
  const how = m.train ? ` (${m.method === 'imm' ? `M = ${m.particles}, k = ${m.k}, ` : ''}batch ${m.train.batch}, ${m.train.optimizer} at lr ${m.train.lr})` : '';
  return `${q.metric} (${q.samples.toLocaleString('en')} samples${q.guidance ? `, guidance ${q.guidance}` : ''}): ${fid}${accuracy}. Trained on ${m.nimg.toLocaleString('en')} images${how} in ${Math.round(m.train_seconds)} s on ${m.machine}.`;
}

async function loadModels() {
  let manifest;
  try {
    const response = await fetch('www/models/models.json');
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    manifest = await response.json();
    state.models = manifest.models;
  } catch (e) {
    showError(`The list of pretrained models could not be read (${e.message}).`);
    return;
  }
  state.toys = manifest.toys ?? [];
  pretrained2d();
  $('image-pretrained').append(...state.models.map((m) => new Option(m.title, m.file)));
  const wanted = state.params.get('model');
  if (wanted && state.models.some((m) => m.file === wanted)) {
    $('image-pretrained').value = wanted;
    loadPretrained();
  }
}

async function loadPretrained() {
  const file = $('image-pretrained').value;
  if (!file) return;
  showError('');
  $('image-status').textContent = `downloading ${file}…`;
  try {
    const response = await fetch(`www/models/${file}`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const bytes = await response.arrayBuffer();
    state.model = file;
    state.imageTrainer = null;
    send({ type: 'image-load', bytes, preset: '', backend: $('backend').value }, [bytes]);
    saveUrl();
  } catch (e) {
    showError(`${file} could not be downloaded (${e.message}).`);
    $('image-status').textContent = 'failed';
  }
}
$('image-pretrained').onchange = loadPretrained;

// The 2D toy's pretrained networks (two methods), when there are some for this toy and network size.
function toyModel() {
  const net = state.net ?? {};
  return state.toys.find((t) => t.toy === $('toy').value && t.net.hidden === net.hidden && t.net.blocks === net.blocks);
}

function pretrained2d() {
  const t = toyModel();
  $('pretrained-2d').disabled = !t;
  $('pretrained-2d').title = t ? `${t.methods.map(titleOf).join(' and ')} trained natively on ${t.nimg.toLocaleString('en')} images each` : 'no pretrained networks for this distribution and network size';
}

$('pretrained-2d').onclick = async () => {
  const t = toyModel();
  if (!t) return;
  showError('');
  try {
    const response = await fetch(`www/models/${t.file}`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const bytes = await response.arrayBuffer();
    send({ type: 'load', bytes }, [bytes]);
    const q = t.quality;
    const row = (m) => Object.entries(q[m]).map(([k, v]) => `${k}: ${v.toFixed(4)}`).join(', ');
    $('pretrained-2d-info').textContent = `Pretrained: ${t.nimg.toLocaleString('en')} images per method in ${Math.round(t.train_seconds)} s on ${t.machine}. `
      + `Energy distance there by steps (floor ${q.floor}): ${t.methods.map((m) => `${titleOf(m)} ${row(m)}`).join('; ')}.`;
  } catch (e) {
    showError(`${t.file} could not be downloaded (${e.message}).`);
  }
};

// Image training in this tab: on a subset of MNIST (and its labels, for the class-conditional
// network) that scripts/web.sh packs into www/data/, or on CIFAR-10 binary batches a person drops
// or chooses (the page cannot ship CIFAR-10).
const TRAIN_IMAGES = 'www/data/mnist-4k-images-idx3-ubyte.gz';
const TRAIN_LABELS = 'www/data/mnist-4k-labels-idx1-ubyte.gz';

function startImageTraining(bytes, preset, labels) {
  state.imageTrainer = preset;
  state.imageRecords = [];
  state.model = null;
  $('image-pretrained').value = '';
  const transfer = labels ? [bytes, labels] : [bytes];
  send({ type: 'image-train-start', bytes, labels, preset, backend: $('backend').value, batch: 0, seed: Number($('seed').value) }, transfer);
  $('image-train-status').textContent = 'training…';
  send({ type: 'image-train' });
}

async function download(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

$('image-train').onclick = async () => {
  showError('');
  const preset = $('image-train-preset').value;
  if (state.imageTrainer === preset) {
    $('image-train-status').textContent = 'training…';
    send({ type: 'image-train' });
    return;
  }
  try {
    const withLabels = trainPreset().conditional;
    const [images, labels] = await Promise.all([download(TRAIN_IMAGES), withLabels ? download(TRAIN_LABELS) : null]);
    startImageTraining(images, preset, labels);
  } catch (e) {
    showError(`The training images could not be downloaded (${e.message}).`);
  }
};

function trainPreset() {
  return state.trainPresets.find((p) => p.name === $('image-train-preset').value);
}

function describeTraining() {
  const p = trainPreset();
  const labels = p.conditional ? ' and their labels' : '';
  $('image-train-status').textContent =
    `${p.name}'s network, ${p.method} with M = ${p.particles}, k = ${p.k}, batch ${p.batch}, on 4,096 MNIST images${labels}, in this tab`;
}
$('image-train-preset').onchange = () => {
  if (!state.imageTrainer) describeTraining();
};

// A chosen file's bytes, or null after saying why they could not be read (a file moved or
// unreadable since it was chosen).
async function readFile(file) {
  try {
    return await file.arrayBuffer();
  } catch (e) {
    showError(`${file.name} could not be read (${e.message}).`);
    return null;
  }
}

async function trainOnCifar(files) {
  if (!files.length) return;
  showError('');
  const parts = await Promise.all([...files].map(readFile));
  if (parts.includes(null)) return;
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  parts.reduce((at, p) => (bytes.set(new Uint8Array(p), at), at + p.byteLength), 0);
  startImageTraining(bytes.buffer, 'cifar10-tiny');
}
$('cifar-files').onchange = async () => {
  await trainOnCifar($('cifar-files').files);
  $('cifar-files').value = '';
};
$('image-view').ondragover = (e) => e.preventDefault();
$('image-view').ondrop = (e) => {
  e.preventDefault();
  trainOnCifar(e.dataTransfer.files);
};
$('image-pause').onclick = () => send({ type: 'image-pause' });

$('image-file').onchange = async () => {
  const file = $('image-file').files[0];
  if (!file) return;
  state.model = null;
  state.imageTrainer = null;
  $('image-pretrained').value = '';
  showError('');
  $('image-status').textContent = `reading ${file.name}…`;
  const bytes = await readFile(file);
  $('image-file').value = '';
  if (!bytes) {
    $('image-status').textContent = 'failed';
    return;
  }
  send({ type: 'image-load', bytes, preset: $('image-preset').value, backend: $('backend').value }, [bytes]);
};
$('image-count').onchange = refresh;

// The live quality number needs the classifier of the model's dataset (MNIST, Fashion-MNIST).
async function setupQuality(data) {
  if (data !== 'mnist' && data !== 'fashion-mnist') return;
  try {
    const [classifier, reference] = await Promise.all(['', '.ref'].map(async (part) => {
      const response = await fetch(`www/models/classifier-${data}${part}.safetensors`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      return response.arrayBuffer();
    }));
    send({ type: 'image-quality', classifier, reference }, [classifier, reference]);
  } catch (e) {
    showError(`The ${data} classifier could not be downloaded (${e.message}); no quality number.`);
  }
}

function drawImages(msg) {
  const canvas = $('image-grid');
  canvas.width = msg.width;
  canvas.height = msg.height;
  canvas.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(msg.rgba.buffer), msg.width, msg.height), 0, 0);
  const cls = msg.cls === '' ? '' : `, ${msg.cls === 'all' ? 'all classes' : `class ${$('class').selectedOptions[0]?.textContent ?? msg.cls}`}, guidance ${msg.cfg}`;
  $('image-status').textContent = `${msg.n} samples, ${msg.steps} step${msg.steps === 1 ? '' : 's'}, seed ${msg.seed}${cls}`;
  $('ms-image').textContent = msg.msPerStep.toFixed(1);
  const q = msg.quality;
  const accuracy = q?.accuracy == null ? '' : ` · class accuracy ${(100 * q.accuracy).toFixed(0)}% (the classifier names the class asked for)`;
  $('image-quality').textContent = q
    ? `Classifier FID of these ${q.n} samples: ${q.fid.toFixed(1)} (${q.n} real images score ${q.real?.toFixed(1) ?? '–'}; lower is better)${accuracy}`
    : '';
}

// --- controls ---------------------------------------------------------------------------------

function reset() {
  state.records = [];
  const toy = $('toy').value;
  if (toy === DRAW) {
    $('draw-row').hidden = false;
    return;
  }
  $('draw-row').hidden = true;
  send({ type: 'reset', toy, backend: $('backend').value, seed: Number($('seed').value), hyper: hyperFromInputs(), methods: chosenInputs() });
  saveUrl();
}

$('train').onclick = () => {
  showError('');
  send({ type: 'train' });
};
$('pause').onclick = () => send({ type: 'pause' });
$('step').onclick = () => send({ type: 'step' });
$('reset').onclick = () => {
  send({ type: 'pause' });
  reset();
};
$('toy').onchange = () => {
  send({ type: 'pause' });
  reset();
  drawPlots();
  pretrained2d();
  $('pretrained-2d-info').textContent = '';
};
// Picking a method trains both from scratch; the same method on both sides swaps them.
const chosenInputs = () => SLOTS.map((slot) => $(`method-${slot}`).value).join(',');
for (const [slot, other] of [['a', 'b'], ['b', 'a']]) {
  $(`method-${slot}`).onchange = () => {
    if ($(`method-${slot}`).value === $(`method-${other}`).value) $(`method-${other}`).value = state.chosen[slot === 'a' ? 0 : 1];
    send({ type: 'pause' });
    reset();
  };
}
$('seed').onchange = () => {
  refresh();
  saveUrl();
};
$('backend').onchange = () => {
  $('adapter').textContent = $('backend').value === 'cpu' ? cpuName() : state.adapter ?? 'WebGPU';
  send({ type: 'pause' });
  reset();
};
$('steps').oninput = () => {
  $('steps-out').textContent = $('steps').value;
  $('time').max = $('steps').value;
  $('time').value = $('steps').value;
  timeLabel();
  refresh();
  saveUrl();
};
$('time').oninput = () => {
  timeLabel();
  drawPlots();
};
for (const id of ['particles', 'batch', 'lr', 'k']) {
  $(id).onchange = () => send({ type: 'hyper', hyper: hyperFromInputs() });
}
$('save').onclick = () => send({ type: 'save' });
$('load').onchange = async () => {
  const file = $('load').files[0];
  if (!file) return;
  delete $('status').dataset.loaded;
  const bytes = await readFile(file);
  $('load').value = '';
  if (bytes) send({ type: 'load', bytes }, [bytes]);
};

// Drawing your own distribution: points in data coordinates.
let drawing = false;
function addPoint(e) {
  if ($('toy').value !== DRAW) return;
  const c = $('a-canvas');
  const r = c.getBoundingClientRect();
  const s = (2 * EXTENT) / r.width;
  state.drawn.push([(e.clientX - r.left) * s - EXTENT, EXTENT - (e.clientY - r.top) * s]);
  $('draw-count').textContent = state.drawn.length;
  drawPlots();
}
$('a-canvas').onpointerdown = (e) => ((drawing = true), addPoint(e));
$('a-canvas').onpointermove = (e) => drawing && addPoint(e);
window.onpointerup = () => (drawing = false);
$('draw-clear').onclick = () => {
  state.drawn = [];
  $('draw-count').textContent = '0';
  drawPlots();
};
$('draw-train').onclick = () => {
  send({ type: 'reset', points: state.drawn.flat(), hyper: hyperFromInputs() });
  send({ type: 'train' });
};

// --- start ------------------------------------------------------------------------------------

async function start() {
  const p = state.params;
  const wanted = p.get('mode') === 'images' ? 'images' : '2d';
  document.querySelector(`input[name="mode"][value="${wanted}"]`).checked = true;
  showMode();
  $('steps').value = p.get('steps') ?? '2';
  $('steps-out').textContent = $('steps').value;
  $('time').max = $('steps').value;
  $('time').value = $('steps').value;
  $('seed').value = p.get('seed') ?? '0';
  $('cfg').value = p.get('cfg') ?? '1';
  showGuidance();
  let backend = p.get('backend') ?? 'webgpu';
  if (backend === 'webgpu') {
    const adapter = await webgpuAdapter();
    if (adapter.error) {
      notice(`WebGPU is not available: ${adapter.error}. The page trains on the CPU instead (WebAssembly), which is fine for these 2D models.`);
      backend = 'cpu';
    } else {
      state.adapter = adapter.name;
      $('adapter').textContent = adapter.name;
    }
  }
  if (backend === 'cpu') $('adapter').textContent = 'CPU (WebAssembly)';
  $('backend').value = backend;
  timeLabel();
  // Settings and the network's size in the URL override the preset's (Rust's); the rest are its.
  const given = (keys) => Object.fromEntries(keys.filter((k) => p.has(k)).map((k) => [k, Number(p.get(k))]));
  const hyper = given(['particles', 'batch', 'lr', 'k']);
  const toy = p.get('toy') && p.get('toy') !== DRAW ? p.get('toy') : 'checkerboard';
  // The network's size comes from the URL only (small ones for slow adapters): hidden, blocks.
  const net = given(['hidden', 'blocks']);
  send({ type: 'init', toy, backend, seed: Number($('seed').value), hyper, net, methods: p.get('methods') ?? undefined, view: view() });
  saveUrl();
}

start();
