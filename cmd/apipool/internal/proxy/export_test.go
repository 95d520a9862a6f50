package proxy

import (
	"testing"
	"time"
)

// ShortDeferredBackoff makes deferred stores retry every few milliseconds
// for the rest of t (set it before creating the server).
func ShortDeferredBackoff(t testing.TB) {
	minB, maxB := deferredMinBackoff, deferredMaxBackoff
	deferredMinBackoff, deferredMaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() { deferredMinBackoff, deferredMaxBackoff = minB, maxB })
}

// DeferredQueueSize is deferredQueueSize, for the tests.
const DeferredQueueSize = deferredQueueSize
