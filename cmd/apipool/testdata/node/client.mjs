// Run by cmd/apipool's tests: the official openai package, with its own
// retries off, against the apipool proxy. BASE_URL is the proxy's
// OpenAI-compatible base URL, PROXY_TOKEN the caller's proxy token (the
// only "API key" this client knows). Prints one JSON line.
import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: process.env.BASE_URL,
  apiKey: process.env.PROXY_TOKEN,
  maxRetries: 0,
  timeout: 60_000,
});

const calls = Number(process.env.CALLS || 6);
const contents = [];
for (let i = 0; i < calls; i++) {
  const r = await client.chat.completions.create({
    model: 'fake-1',
    messages: [{ role: 'user', content: `hello ${i}` }],
  });
  contents.push(r.choices[0].message.content);
}

const stream = await client.chat.completions.create({
  model: 'fake-1',
  messages: [{ role: 'user', content: 'stream please' }],
  stream: true,
});
let text = '';
let chunks = 0;
for await (const c of stream) {
  text += c.choices[0]?.delta?.content ?? '';
  chunks++;
}

const models = await client.models.list();
console.log(JSON.stringify({ contents, text, chunks, models: models.data.map((m) => m.id) }));
