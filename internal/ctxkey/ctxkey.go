// Package ctxkey holds the context keys that the pool and the apipool
// proxy share: the proxy's per-request context answers them itself, with
// no context.WithValue (an allocation) per request.
package ctxkey

// Client is the key of the name of who sends a request
// (apipool.ContextWithClient); its value is a string.
type Client struct{}

// Operation is the key of the name of a request's API operation
// (apipool.ContextWithOperation); its value is a string.
type Operation struct{}
