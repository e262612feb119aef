// The official openai npm client against fabrica-gateway. Started by tests/e2e/gateway_test.cc,
// which sets up fabricad, two tenants, their endpoints and keys, the test upstreams and the
// gateway, and passes them in the environment.
import assert from 'node:assert/strict';
import test from 'node:test';
import OpenAI from 'openai';

const env = process.env;
const baseURL = env.GATEWAY_URL;
const client = (apiKey, extra = {}) => new OpenAI({ apiKey, baseURL, ...extra });
const acme = client(env.ACME_KEY);

test('chat completion, not streamed, with usage', async () => {
  const r = await acme.chat.completions.create({
    model: env.ACME_MODEL, messages: [{ role: 'user', content: 'one two three' }], max_tokens: 4,
  });
  assert.match(r.choices[0].message.content, /^acme-[ab]: tok0 tok1 tok2 tok3$/);
  assert.deepEqual(r.usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
});

test('chat completion streamed chunk by chunk', async () => {
  const stream = await acme.chat.completions.create({
    model: env.ACME_MODEL, messages: [{ role: 'user', content: 'hello [[tokens:5]]' }],
    stream: true,
  });
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.usage, undefined, 'the usage chunk the gateway asked for is not shown');
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.match(text, /^acme-[ab]: tok0 tok1 tok2 tok3 tok4$/);
  assert.equal(chunks, 7);  // Role chunk, five tokens, finish.
});

test('stream_options.include_usage is honoured: the final usage chunk is kept', async () => {
  const stream = await acme.chat.completions.create({
    model: env.ACME_MODEL, messages: [{ role: 'user', content: 'a b [[tokens:3]]' }],
    stream: true, stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  assert.deepEqual(usage, { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 });
});

test('completions, streamed and not', async () => {
  const r = await acme.completions.create({ model: env.ACME_MODEL, prompt: 'x y', max_tokens: 2 });
  assert.match(r.choices[0].text, /tok0 tok1$/);
  assert.equal(r.usage.completion_tokens, 2);
  const stream = await acme.completions.create({
    model: env.ACME_MODEL, prompt: 'x [[tokens:2]]', stream: true,
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.match(text, /tok0 tok1$/);
});

test('embeddings as floats and as base64 (the client decodes)', async () => {
  const floats = await acme.embeddings.create({
    model: env.ACME_MODEL, input: ['alpha', 'beta'], encoding_format: 'float',
  });
  assert.equal(floats.data.length, 2);
  assert.equal(floats.data[0].embedding.length, 8);
  const decoded = await acme.embeddings.create({ model: env.ACME_MODEL, input: ['alpha', 'beta'] });
  for (let i = 0; i < 8; i++) {
    assert.ok(Math.abs(decoded.data[1].embedding[i] - floats.data[1].embedding[i]) < 1e-6);
  }
  assert.equal(decoded.usage.prompt_tokens, 2);
});

test('models lists only what the key may call', async () => {
  const ids = [];
  for await (const m of acme.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), [env.ACME_MODEL, env.ACME_OTHER_MODEL].sort());
  const narrow = [];
  for await (const m of client(env.ACME_NARROW_KEY).models.list()) narrow.push(m.id);
  assert.deepEqual(narrow, [env.ACME_MODEL]);
  const one = await acme.models.retrieve(env.ACME_MODEL);
  assert.equal(one.id, env.ACME_MODEL);
  for (const id of ids) assert.ok(!id.includes('umbrella'));
});

test('a bad key is an AuthenticationError', async () => {
  await assert.rejects(
    client('fak_not_a_real_key', { maxRetries: 0 }).chat.completions.create({
      model: env.ACME_MODEL, messages: [{ role: 'user', content: 'x' }],
    }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 &&
           e.code === 'invalid_api_key');
});

test('a model the key may not use is a PermissionDeniedError', async () => {
  await assert.rejects(
    client(env.ACME_NARROW_KEY).chat.completions.create({
      model: env.ACME_OTHER_MODEL, messages: [{ role: 'user', content: 'x' }],
    }),
    (e) => e instanceof OpenAI.PermissionDeniedError && e.status === 403);
});

test('an unknown model is a NotFoundError', async () => {
  await assert.rejects(
    acme.chat.completions.create({ model: 'no/such-model', messages: [] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found' &&
           e.param === 'model');
});

test("another tenant's model reads exactly like one that does not exist", async () => {
  let theirs;
  let none;
  try {
    await acme.chat.completions.create({ model: env.UMBRELLA_MODEL, messages: [] });
  } catch (e) { theirs = e; }
  try {
    await acme.chat.completions.create({ model: 'no/such-model', messages: [] });
  } catch (e) { none = e; }
  assert.ok(theirs instanceof OpenAI.NotFoundError);
  assert.equal(theirs.status, none.status);
  assert.equal(theirs.code, none.code);
  assert.equal(theirs.message.replace(env.UMBRELLA_MODEL, 'M'),
               none.message.replace('no/such-model', 'M'));
  // Umbrella's own key does reach it.
  const r = await client(env.UMBRELLA_KEY).chat.completions.create({
    model: env.UMBRELLA_MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1,
  });
  assert.match(r.choices[0].message.content, /^umbrella: tok0$/);
});

test('a rate limit is a RateLimitError after the client\'s own retries', async () => {
  const limited = client(env.ACME_LIMITED_KEY);  // rpm 1; default maxRetries 2.
  await limited.chat.completions.create({
    model: env.ACME_MODEL, messages: [{ role: 'user', content: 'first' }], max_tokens: 1,
  });
  const started = Date.now();
  await assert.rejects(
    limited.chat.completions.create({
      model: env.ACME_MODEL, messages: [{ role: 'user', content: 'second' }], max_tokens: 1,
    }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429 &&
           e.headers['x-ratelimit-limit-requests'] === '1' &&
           Number(e.headers['retry-after']) > 0);
  assert.ok(Date.now() - started < 30000);
});

test('an upstream that breaks off mid-stream becomes an error in the stream', async () => {
  const stream = await acme.chat.completions.create({
    model: env.ACME_MODEL, messages: [{ role: 'user', content: 'x [[tokens:6]] [[cut:2]]' }],
    stream: true,
  });
  let text = '';
  await assert.rejects(async () => {
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  }, (e) => e instanceof OpenAI.APIError && /broke off/.test(e.message));
  assert.match(text, /tok0 tok1$/);
});
