// A static server of the project root on 127.0.0.1 with the MIME types the page needs (.wasm,
// .mjs) and the two headers that make it cross-origin isolated, so that the page may share memory
// between threads (its threaded CPU backend). Run directly (scripts/web.sh serve) it listens on
// $PORT or 8080; tests import `serve`.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(new URL('..', import.meta.url).pathname);
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

// What any host must send for the threaded build; without them the page runs its single-threaded one.
const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

// `isolated: false` serves the page as a host without those headers would.
export function serve(port = 0, { isolated = true } = {}) {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://localhost').pathname));
    const file = join(ROOT, path.endsWith('/') ? join(path, 'index.html') : path);
    if (file !== ROOT && !file.startsWith(ROOT + sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      const type = { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' };
      res.writeHead(200, isolated ? { ...type, ...ISOLATION } : type).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok(server));
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const port = Number(process.env.PORT ?? 8080);
  serve(port).then(
    () => console.log(`serving ${ROOT} at http://127.0.0.1:${port}/ (Ctrl-C stops)`),
    (e) => { console.error(`cannot listen on 127.0.0.1:${port}: ${e.message}`); process.exit(1); },
  );
}
