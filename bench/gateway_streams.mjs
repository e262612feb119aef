// Holds N concurrent SSE streams open through a URL (the gateway) and reports how many were
// held at once. Usage: node gateway_streams.mjs URL KEY MODEL N HOLD_MS
// Each stream asks the test upstream for tokens slowly enough to stay open HOLD_MS.
import http from 'node:http';

const [url, key, model, n, holdMs] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const tokens = 5;
const delay = Math.ceil(Number(holdMs) / tokens);
const body = JSON.stringify({
  model, stream: true, messages: [{ role: 'user', content: `[[tokens:${tokens}]] [[delay:${delay}]]` }],
});
let open = 0, peak = 0, done = 0, failed = 0;
await new Promise((resolve) => {
  for (let i = 0; i < Number(n); i++) {
    const req = http.request({
      host: target.hostname, port: target.port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`,
                 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      const ok = res.statusCode === 200;
      let first = true;
      res.on('data', () => {
        if (first && ok) { first = false; open++; peak = Math.max(peak, open); }
      });
      res.on('end', () => {
        if (ok) { open--; done++; } else failed++;
        if (done + failed >= Number(n)) resolve();
      });
    });
    req.on('error', () => { if (done + ++failed >= Number(n)) resolve(); });
    req.end(body);
  }
});
console.log(JSON.stringify({ requested: Number(n), peak_open: peak, completed: done, failed }));
