package clickhouse

import (
	"math/rand/v2"
	"time"
)

// backoffDelay returns the wait before retry number attempt (from 0):
// d = min(minD·2^attempt, maxD), jittered to a uniformly random point of
// [d/2, d]. u is a uniform random number in [0, 1).
func backoffDelay(attempt int, minD, maxD time.Duration, u float64) time.Duration {
	d := maxD
	if attempt < 62 && minD < maxD>>min(attempt, 62) {
		d = minD << attempt
	}
	return d/2 + time.Duration(u*float64(d-d/2))
}

// backoff counts consecutive failures and returns jittered, growing
// delays. It is used by one goroutine.
type backoff struct {
	min, max time.Duration
	failures int
	rnd      *rand.Rand
}

func newBackoff(minD, maxD time.Duration) backoff {
	return backoff{min: minD, max: maxD, rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// next returns the delay after one more failure.
func (b *backoff) next() time.Duration {
	d := backoffDelay(b.failures, b.min, b.max, b.rnd.Float64())
	b.failures++
	return d
}

func (b *backoff) reset() { b.failures = 0 }
