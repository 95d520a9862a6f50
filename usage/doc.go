// Package usage reads the units an API answer consumed (input, output and
// cached tokens for the LLM APIs, or an API's own unit) from the answer as
// it passes to the caller, and prices them.
//
// # Readers and meters
//
// A Reader is given each answer's headers (Start) and returns a Meter,
// which is given every body byte as the caller reads it (Write) and, at the
// body's end or close, returns the Units found (Done). A meter neither
// delays nor copies a byte to the caller: it only looks at them. The
// ready readers:
//
//   - OpenAI: chat completions, completions, embeddings, responses;
//   - Anthropic: messages;
//   - Gemini: generateContent and streamGenerateContent (usageMetadata);
//   - Auto: any of those, told apart by the shape of their JSON;
//   - Header: a number in a response header (or trailer), for an API that
//     bills in its own unit;
//   - Func: a function given the response and the body's last bytes.
//
// The token readers read JSON answers and Server-Sent Events streams
// (text/event-stream) of JSON events alike, incrementally: they keep no
// byte of the body, only their place in the JSON along the few paths that
// lead to a usage object (the top-level usage, response.usage,
// message.usage, usageMetadata) and the counts found there. Everything
// else (message content, tool arguments, a "usage" key inside a string or
// deeper in the answer) is skimmed, counting brackets and quotes only.
// A meter allocates once, when Start makes it, whatever the length of the
// body or the number of events; its memory is a few hundred bytes.
//
// # What they give
//
// Unknown (-1 in every field) is never zero:
//
//   - an answer without usage (a chat stream whose request did not set
//     stream_options.include_usage, see AddIncludeUsage; an error answer;
//     a body cut before its usage) gives Unknown;
//   - a usage object counts once it is whole (its closing brace read),
//     whether or not the body was then read to its end;
//   - where a stream states its input early and its output at the end
//     (Anthropic's message_start and message_delta; Gemini's cumulative
//     chunks), a stream cut before the end gives the input tokens and
//     OutputTokens -1.
//
// The token readers' Start returns nil, and the units are Unknown, for an
// answer that is not a 2xx, has no body, or is not JSON or SSE.
//
// # Bounds
//
// Counts are whole numbers up to the largest int64; a count written as a
// fraction or with an exponent is not read. A key written with escapes
// (\u0075sage) is not recognised. The JSON of an SSE event may span several
// data lines. JSON arrays of answers (Gemini without alt=sse) and NDJSON
// (one answer per line) are read; in NDJSON the counts of the last answer
// that had some are kept. JSON that breaks is not read past the break: in
// an SSE stream, up to the end of its event; in a JSON body, to its end.
// Func keeps at most MaxTail bytes of a body, StripUsageChunk holds at most
// MaxHeldEvent bytes of one event.
//
// # Compressed bodies
//
// A meter sees the bytes the caller reads. Go's http.Transport asks for
// gzip itself when a request has no Accept-Encoding header, and then
// decodes the body before anyone reads it (resp.Uncompressed): the meter
// sees JSON. When the caller sets Accept-Encoding itself, the body comes
// encoded as the server sent it, with its Content-Encoding header; the
// token readers then return nil from Start (the tokens are not known), as
// decoding a second copy would double the work of every answer.
//
// # Requests and prices
//
// AddIncludeUsage rewrites an OpenAI-style streamed request so that its
// stream states its usage, and StripUsageChunk hides from the caller the
// chunk that adds. Prices turns Units into cost, from a table the user
// gives.
package usage
