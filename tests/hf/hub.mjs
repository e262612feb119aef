// A Hugging Face Hub look-alike for tests and benchmarks (never product code). It serves model
// repositories it generates: config.json, tokenizer files, a README, and safetensors shards
// with valid headers, through the Hub's API as huggingface_hub sees it:
//   GET /api/models/ORG/NAME/revision/REV      {"id","sha"}, X-Repo-Commit
//   GET /api/models/ORG/NAME/tree/SHA?recursive  pages of --page-size entries, Link rel="next"
//   GET /ORG/NAME/resolve/SHA/PATH             small files direct; LFS files 302 to /cdn/SHA256
//   GET /cdn/SHA256                            the bytes, with Range
// Repositories: acme/tiny (public), acme/gated (401 GatedRepo without a token, 403 GatedRepo
// with "hf_denied", served with "hf_granted"), acme/corrupt (a shard's bytes differ from the
// sha256 its tree lists).
// Control (tests): POST /_faults {"rate_limit": N, "cut": N, "throttle_bps": N} makes the next
// N file downloads answer 429 Retry-After: 1, the next N cut the connection halfway, and every
// body go at most throttle_bps; GET /_stats counts requests and bytes; POST /_stats/reset.
// Usage: node hub.mjs [--port 0] [--shard-mib 3] [--page-size 3]; prints {"port": N}.
import http from 'node:http';
import crypto from 'node:crypto';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const shardMib = Number(args['shard-mib'] ?? 3);
const pageSize = Number(args['page-size'] ?? 3);

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');
const gitOid = (b) => crypto.createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

function safetensors(name, bytes, seed) {
  const cols = 1024;
  const rows = Math.floor(bytes / 2 / cols);
  const n = rows * cols * 2;
  let header = JSON.stringify({
    __metadata__: { format: 'pt' },
    [name]: { dtype: 'BF16', shape: [rows, cols], data_offsets: [0, n] },
  });
  while ((header.length + 8) % 8) header += ' ';
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(header.length));
  const data = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i += 4) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    data.writeUInt32LE(x, i);
  }
  return Buffer.concat([head, Buffer.from(header), data]);
}

function makeRepo(id, { corrupt = false, seed = 1 } = {}) {
  const config = {
    architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', num_attention_heads: 16,
    num_key_value_heads: 8, num_hidden_layers: 28, hidden_size: 1024, head_dim: 128,
    max_position_embeddings: 40960, torch_dtype: 'bfloat16',
  };
  const files = {
    'config.json': Buffer.from(JSON.stringify(config, null, 2)),
    'generation_config.json': Buffer.from('{"do_sample": true}\n'),
    'tokenizer.json': Buffer.from(JSON.stringify({ version: '1.0', model: { type: 'BPE' } })),
    'tokenizer_config.json': Buffer.from('{"model_max_length": 40960}\n'),
    'README.md': Buffer.from(`# ${id}\nA generated test model.\n`),
    'model-00001-of-00002.safetensors': safetensors('layer.0', shardMib << 20, seed),
    'model-00002-of-00002.safetensors': safetensors('layer.1', Math.max(1, shardMib - 1) << 20, seed + 1),
  };
  files['model.safetensors.index.json'] = Buffer.from(JSON.stringify({
    weight_map: { 'layer.0': 'model-00001-of-00002.safetensors', 'layer.1': 'model-00002-of-00002.safetensors' },
  }));
  const entries = Object.entries(files).map(([path, data]) => {
    const lfs = path.endsWith('.safetensors');
    const e = { type: 'file', path, size: data.length, oid: gitOid(lfs ? Buffer.from(`lfs ${sha256(data)}`) : data) };
    if (lfs) e.lfs = { oid: sha256(data), size: data.length, pointerSize: 134 };
    return e;
  });
  const commit = crypto.createHash('sha1').update(id + JSON.stringify(entries)).digest('hex');
  if (corrupt) {
    const f = files['model-00002-of-00002.safetensors'];
    files['model-00002-of-00002.safetensors'] = Buffer.concat([f.subarray(0, f.length - 1), Buffer.from([f[f.length - 1] ^ 0xff])]);
  }
  return { id, commit, files, entries: [{ type: 'directory', path: 'sub', oid: '0'.repeat(40), size: 0 }, ...entries] };
}

const repos = { 'acme/tiny': makeRepo('acme/tiny'), 'acme/gated': makeRepo('acme/gated', { seed: 4 }) };
repos['acme/corrupt'] = makeRepo('acme/corrupt', { corrupt: true, seed: 7 });

const faults = { rate_limit: 0, cut: 0, throttle_bps: 0 };
let stats = { requests: 0, file_requests: 0, range_requests: 0, bytes: 0, paths: {} };

function refuse(res, status, code, message) {
  const headers = { 'Content-Type': 'application/json' };
  if (code) headers['X-Error-Code'] = code;
  if (message) headers['X-Error-Message'] = message;
  res.writeHead(status, headers);
  res.end(JSON.stringify({ error: message ?? code ?? 'error' }));
}

function access(req, res, repo) {
  if (repo.id !== 'acme/gated') return true;
  const auth = req.headers.authorization ?? '';
  if (auth === 'Bearer hf_granted') return true;
  if (!auth) refuse(res, 401, 'GatedRepo', 'Access to model acme/gated is restricted. You must have access to it and be authenticated to access it. Please log in.');
  else if (auth === 'Bearer hf_denied') refuse(res, 403, 'GatedRepo', 'Access to model acme/gated is restricted and you are not in the authorized list.');
  else refuse(res, 401, null, 'Invalid credentials in Authorization header');
  return false;
}

async function sendBytes(req, res, data, extra = {}) {
  stats.file_requests++;
  if (faults.rate_limit > 0) {
    faults.rate_limit--;
    res.writeHead(429, { 'Retry-After': '1', 'Content-Type': 'application/json' });
    return res.end('{"error":"rate limited"}');
  }
  let start = 0;
  let status = 200;
  const headers = { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes', ETag: `"${sha256(data)}"`, ...extra };
  const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (range) {
    stats.range_requests++;
    start = Number(range[1]);
    if (start >= data.length) {
      res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
      return res.end();
    }
    status = 206;
    headers['Content-Range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
  }
  const body = data.subarray(start);
  headers['Content-Length'] = body.length;
  res.writeHead(status, headers);
  let cut = -1;
  if (faults.cut > 0 && body.length > (1 << 20)) {
    faults.cut--;
    cut = Math.floor(body.length / 2);
  }
  const chunk = 64 << 10;
  for (let at = 0; at < body.length; at += chunk) {
    let piece = body.subarray(at, Math.min(body.length, at + chunk));
    if (cut >= 0 && at + piece.length > cut) {
      piece = piece.subarray(0, cut - at);
      stats.bytes += piece.length;
      res.write(piece);
      await new Promise((r) => setTimeout(r, 50));
      return res.socket.destroy();
    }
    stats.bytes += piece.length;
    if (!res.write(piece)) await new Promise((r) => res.once('drain', r));
    if (faults.throttle_bps > 0) await new Promise((r) => setTimeout(r, (piece.length / faults.throttle_bps) * 1000));
    if (res.destroyed) return;
  }
  res.end();
}

const server = http.createServer(async (req, res) => {
  stats.requests++;
  const url = new URL(req.url, 'http://hub');
  const path = decodeURIComponent(url.pathname);
  stats.paths[path] = (stats.paths[path] ?? 0) + 1;
  try {
    if (req.method === 'POST' && path === '/_faults') {
      let body = '';
      for await (const c of req) body += c;
      Object.assign(faults, JSON.parse(body || '{}'));
      return res.end(JSON.stringify(faults));
    }
    if (path === '/_stats') return res.end(JSON.stringify(stats));
    if (req.method === 'POST' && path === '/_stats/reset') {
      stats = { requests: 0, file_requests: 0, range_requests: 0, bytes: 0, paths: {} };
      return res.end('{}');
    }
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path);
    if (m) {
      const repo = repos[m[1]];
      if (!repo) return refuse(res, 401, 'RepoNotFound', 'Repository not found');
      if (!access(req, res, repo)) return;
      if (m[2] !== 'main' && m[2] !== repo.commit) return refuse(res, 404, 'RevisionNotFound', `Invalid rev id: ${m[2]}`);
      res.writeHead(200, { 'Content-Type': 'application/json', 'X-Repo-Commit': repo.commit });
      return res.end(JSON.stringify({ id: repo.id, sha: repo.commit, gated: repo.id === 'acme/gated' ? 'manual' : false }));
    }
    m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(path);
    if (m) {
      const repo = repos[m[1]];
      if (!repo) return refuse(res, 401, 'RepoNotFound', 'Repository not found');
      if (!access(req, res, repo)) return;
      if (m[2] !== repo.commit) return refuse(res, 404, 'RevisionNotFound', 'Invalid rev id');
      const cursor = Number(url.searchParams.get('cursor') ?? 0);
      const page = repo.entries.slice(cursor, cursor + pageSize);
      const headers = { 'Content-Type': 'application/json' };
      if (cursor + pageSize < repo.entries.length) {
        headers.Link = `<http://${req.headers.host}/api/models/${repo.id}/tree/${repo.commit}?recursive=true&cursor=${cursor + pageSize}>; rel="next"`;
      }
      res.writeHead(200, headers);
      return res.end(JSON.stringify(page));
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m) {
      const repo = repos[m[1]];
      if (!repo) return refuse(res, 401, 'RepoNotFound', 'Repository not found');
      if (!access(req, res, repo)) return;
      if (m[2] !== repo.commit) return refuse(res, 404, 'RevisionNotFound', 'Invalid rev id');
      const entry = repo.entries.find((e) => e.path === m[3] && e.type === 'file');
      if (!entry) return refuse(res, 404, 'EntryNotFound', `${m[3]} does not exist`);
      if (entry.lfs) {
        // The CDN: another path, no token needed (a signed URL in real life).
        res.writeHead(302, { Location: `/cdn/${entry.lfs.oid}?repo=${encodeURIComponent(repo.id)}`, 'X-Repo-Commit': repo.commit, 'X-Linked-Etag': `"${entry.lfs.oid}"`, 'X-Linked-Size': String(entry.size) });
        return res.end();
      }
      return sendBytes(req, res, repo.files[entry.path], { 'X-Repo-Commit': repo.commit });
    }
    m = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (m) {
      const repo = repos[url.searchParams.get('repo')];
      const entry = repo?.entries.find((e) => e.lfs?.oid === m[1]);
      const data = entry ? repo.files[entry.path] : undefined;
      if (!data) return refuse(res, 404, 'EntryNotFound', 'no such object');
      return sendBytes(req, res, data);
    }
    refuse(res, 404, null, 'not found');
  } catch (e) {
    if (!res.headersSent) refuse(res, 500, null, String(e));
    else res.destroy();
  }
});

server.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
