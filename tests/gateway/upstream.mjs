// A small OpenAI-compatible server for testing fabrica-gateway (a test fixture, not a product
// feature). Deterministic answers; directives in the prompt drive faults:
//   [[fail:503]]   answer with that HTTP status        [[delay:40]]  wait 40 ms per token
//   [[cut:3]]      drop the connection after 3 chunks   [[hang]]      never answer
//   [[tokens:5]]   produce 5 tokens (else max_tokens, else 8)
// Usage: node upstream.mjs [--port 0] [--name A] [--key SECRET] [--token-delay-ms 0]
//                          [--tls-cert PEM --tls-key PEM]   (serve https instead of http)
// Prints {"port":N} on its first line. GET /test/stats tells what it saw.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []));
const name = args.name ?? 'upstream';
const key = args.key ?? '';
const baseDelay = Number(args['token-delay-ms'] ?? 0);
const stats = { requests: 0, by_path: {}, authorization: [], aborted: 0, completed_streams: 0,
                bodies: [] };

function promptText(body) {
  if (Array.isArray(body.messages)) {
    return body.messages.map((m) => (typeof m.content === 'string' ? m.content : '')).join(' ');
  }
  if (Array.isArray(body.prompt)) return body.prompt.join(' ');
  if (typeof body.prompt === 'string') return body.prompt;
  if (Array.isArray(body.input)) return body.input.join(' ');
  return typeof body.input === 'string' ? body.input : '';
}

function directive(text, word) {
  const m = text.match(new RegExp(`\\[\\[${word}(?::(\\d+))?\\]\\]`));
  return m ? (m[1] === undefined ? true : Number(m[1])) : undefined;
}

const words = (text) => text.split(/\s+/).filter(Boolean).length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function send(res, status, obj, headers = {}) {
  const text = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'x-upstream-name': name,
                          'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function embedding(input, index) {
  const v = new Float32Array(8);
  let h = 2166136261;
  for (const c of input) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  for (let i = 0; i < 8; i++) v[i] = ((h >>> (i * 4)) & 15) / 16 + index;
  return v;
}

async function completion(req, res, body, kind) {
  const text = promptText(body);
  const fail = directive(text, 'fail');
  if (fail) return send(res, fail, { error: { message: `injected ${fail}`, type: 'server_error',
                                                param: null, code: null } });
  if (directive(text, 'hang')) return;  // The gateway's timeouts are under test.
  const delay = directive(text, 'delay') ?? baseDelay;
  const count = directive(text, 'tokens') ?? body.max_tokens ?? body.max_completion_tokens ?? 8;
  const cut = directive(text, 'cut');
  const pieces = Array.from({ length: count }, (_, i) => `${i === 0 ? '' : ' '}tok${i}`);
  const usage = { prompt_tokens: words(text), completion_tokens: count,
                  total_tokens: words(text) + count };
  const id = `cmpl-${name}-${stats.requests}`;
  const object = kind === 'chat' ? 'chat.completion' : 'text_completion';
  const choice = (content, finish) => (kind === 'chat'
    ? { index: 0, delta: content === null ? {} : { content }, finish_reason: finish }
    : { index: 0, text: content ?? '', finish_reason: finish, logprobs: null });
  if (!body.stream) {
    for (let i = 0; i < count && delay; i++) await sleep(delay);
    const content = `${name}: ${pieces.join('')}`;
    return send(res, 200, {
      id, object, created: 1700000000, model: body.model,
      choices: [kind === 'chat'
        ? { index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }
        : { index: 0, text: content, finish_reason: 'stop', logprobs: null }],
      usage,
    });
  }
  const includeUsage = body.stream_options?.include_usage === true;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache',
                       'x-upstream-name': name });
  let closed = false;
  res.on('close', () => { if (!res.writableEnded) { closed = true; stats.aborted++; } });
  const chunk = (choices, extra = {}) => res.write(`data: ${JSON.stringify({
    id, object: `${object}.chunk`.replace('text_completion.chunk', 'text_completion'),
    created: 1700000000, model: body.model, choices,
    ...(includeUsage ? { usage: null } : {}), ...extra })}\n\n`);
  chunk([choice(`${name}: `, null)]);
  for (let i = 0; i < count; i++) {
    if (delay) await sleep(delay);
    if (closed) return;
    if (cut !== undefined && i === cut) {
      await sleep(50);  // Let what was written reach the gateway, then cut.
      res.socket.destroy();
      return;
    }
    chunk([choice(pieces[i], null)]);
  }
  chunk([choice(null, 'stop')]);
  if (includeUsage) chunk([], { usage });
  res.write('data: [DONE]\n\n');
  res.end();
  stats.completed_streams++;
}

function embeddings(res, body) {
  const inputs = Array.isArray(body.input) ? body.input : [body.input];
  const base64 = body.encoding_format === 'base64';
  const data = inputs.map((input, index) => {
    const v = embedding(String(input), index);
    return { object: 'embedding', index,
             embedding: base64 ? Buffer.from(v.buffer).toString('base64') : Array.from(v) };
  });
  const tokens = inputs.reduce((n, s) => n + words(String(s)), 0);
  send(res, 200, { object: 'list', data, model: body.model,
                   usage: { prompt_tokens: tokens, total_tokens: tokens } });
}

const handler = (req, res) => {
  let raw = '';
  req.on('data', (d) => { raw += d; });
  req.on('end', async () => {
    const path = req.url.split('?')[0];
    if (path === '/test/stats') return send(res, 200, stats);
    stats.requests++;
    stats.by_path[path] = (stats.by_path[path] ?? 0) + 1;
    stats.authorization.push(req.headers.authorization ?? '');
    if (stats.authorization.length > 50) stats.authorization.shift();
    if (key && req.headers.authorization !== `Bearer ${key}`) {
      return send(res, 401, { error: { message: 'bad backend key', type: 'auth', param: null,
                                       code: null } });
    }
    if (req.method === 'GET' && path === '/v1/models') {
      return send(res, 200, { object: 'list', data: [{ id: name, object: 'model' }] });
    }
    let body;
    try { body = JSON.parse(raw); } catch {
      return send(res, 400, { error: { message: 'bad json', type: 'invalid_request_error',
                                       param: null, code: null } });
    }
    stats.bodies.push(body);
    if (stats.bodies.length > 20) stats.bodies.shift();
    if (path === '/v1/chat/completions') return completion(req, res, body, 'chat');
    if (path === '/v1/completions') return completion(req, res, body, 'completions');
    if (path === '/v1/embeddings') return embeddings(res, body);
    send(res, 404, { error: { message: 'no route', type: 'invalid_request_error', param: null,
                              code: null } });
  });
};
const server = args['tls-cert']
  ? https.createServer({ cert: fs.readFileSync(args['tls-cert']),
                         key: fs.readFileSync(args['tls-key']) }, handler)
  : http.createServer(handler);
server.keepAliveTimeout = 60000;
server.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port, name }));
});
process.on('SIGTERM', () => process.exit(0));
