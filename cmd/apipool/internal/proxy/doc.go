// Package proxy is the apipool command's server: a reverse proxy
// (net/http/httputil.ReverseProxy) whose transport is an apipool pool, one
// per configured upstream, in front of callers that authenticate with
// tokens of their own. It also runs the check and report subcommands.
//
// A Server is built from a validated config.Config by New, serves with
// Serve (or through Handler in tests), reloads keys and tokens with Reload,
// and stops with Shutdown: it stops accepting, lets requests in flight
// finish, closes the pools and flushes the recorder within a deadline.
//
// What reaches an upstream:
//   - only requests from callers with a configured token (Authorization:
//     Bearer, X-Api-Key, Api-Key or X-Goog-Api-Key; or the query parameter
//     key, api_key or apikey), compared as SHA-256 hashes in constant time;
//   - only to the configured upstreams: CONNECT, absolute-form request
//     targets and paths with dot segments are refused, and the Host header
//     only selects among configured upstreams, it never names a target;
//   - without the caller's credentials: the headers and query parameters
//     above are removed before the pool applies its own key.
//
// What reaches a caller: no pool key. Every answer's headers and body are
// scrubbed of every pool secret, whole or by 8 or more consecutive
// characters, and of masked forms of them (scrub.go; the command's README
// says what is done where).
package proxy
