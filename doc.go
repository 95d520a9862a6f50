// Package apipool spreads the requests of one program over a pool of API
// keys for the same upstream API. Its Transport is an http.RoundTripper:
// set it as an http.Client's Transport, hand that client to any SDK, and
// every request goes out with a key picked from the pool.
//
// # One request, top to bottom
//
// RoundTrip (transport.go) decides whether the request's host is keyed at
// all, then runs the attempt loop (attempt.go):
//
//  1. take a key (pick.go): the selector picks among the keys that are free
//     now (keyState.availability, keystate.go, is the one answer to "is this
//     key free, and if not, when and why"); the pick reserves every limit of
//     the key as one (reserve), or rolls all of them back and the request
//     looks again. When no key is free, the request waits in arrival order
//     for the earliest one, within its context and WithMaxWait, or fails
//     with a *NoKeyError that says, per key, why and until when.
//  2. send a copy of the request with the key applied (credentials.go):
//     every credential an SDK put on the request is removed first, so the
//     pool's key is the only one on the wire.
//  3. classify the answer (package status) and settle the key
//     (keystate.go): a rate limit cools the key until its Retry-After, and
//     when the cooldown ends the key takes one trial request before more; a
//     rejected key is disabled and tried again alone after a growing
//     backoff; server and network errors count towards the key's circuit
//     breaker (breaker.go); a caller's own deadline or cancel counts as
//     neither.
//  4. record one usage event (package recorder), then return the answer, or
//     resend it on another key (body.go replays the body).
//
// Rate-limit answers do not use up WithMaxAttempts: that budget is for
// server and network failures; a request resends past rate limits for as
// long as its wait budget lasts.
package apipool
