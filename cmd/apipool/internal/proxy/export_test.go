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

// ShortWebhookBackoff makes the webhooks retry within milliseconds for the
// rest of t (set it before creating the server).
func ShortWebhookBackoff(t testing.TB) {
	minB, maxB := webhookBackoffMin, webhookBackoffMax
	webhookBackoffMin, webhookBackoffMax = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { webhookBackoffMin, webhookBackoffMax = minB, maxB })
}
