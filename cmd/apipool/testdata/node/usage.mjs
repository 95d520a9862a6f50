// Run by cmd/apipool's tests (TestNodeOpenAIIncludeUsage): the official
// openai package streams chat completions through a proxy whose upstream
// has usage.include_usage on. BASE_URL and PROXY_TOKEN as in client.mjs.
// Prints one JSON line: what the client saw of each stream.
import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: process.env.BASE_URL,
  apiKey: process.env.PROXY_TOKEN,
  maxRetries: 0,
  timeout: 60_000,
});
const messages = [{ role: 'user', content: 'stream please' }];

// read iterates a stream: its text, its chunks, the chunks that have a
// usage member at all (even null), and the last usage stated.
async function read(stream) {
  const out = { text: '', chunks: 0, usageMembers: 0, usage: null };
  for await (const c of stream) {
    out.chunks++;
    if ('usage' in c) out.usageMembers++;
    if (c.usage) out.usage = c.usage;
    out.text += c.choices[0]?.delta?.content ?? '';
  }
  return out;
}

// Not asking for the usage: the stream as the upstream sends it without.
const plain = await read(await client.chat.completions.create({ model: 'fake-1', messages, stream: true }));
// Asking for it: the usage chunk comes.
const asked = await read(await client.chat.completions.create({
  model: 'fake-1', messages, stream: true, stream_options: { include_usage: true },
}));
// The SDK's accumulating helper, not asking: its final completion.
const runner = client.chat.completions.stream({ model: 'fake-1', messages });
const final = await runner.finalChatCompletion();

console.log(JSON.stringify({
  plain,
  asked,
  helper: { text: final.choices[0]?.message?.content ?? '', usage: final.usage ?? null },
}));
