package recordertest

import (
	"math/rand/v2"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// Base is the default base time of the suite's events: a whole hour.
var Base = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

// The suite's keys. The empty key holds the events recorded without a key.
const (
	KeyAlpha = "alpha"
	KeyBeta  = "beta"
	KeyGamma = "gamma"
	KeyNone  = ""
)

// The suite's models and clients (Event.Model, Event.Client).
const (
	ModelA      = "model-a"
	ModelB      = "model-b"
	ClientWeb   = "web"
	ClientBatch = "batch"
)

// Events returns the suite's events, in the order the suite records them
// (shuffled, with a fixed seed), for a base time that must be a whole hour:
//
//   - hours 0, 1 and 2 after base: 100 successes of alpha per hour, one
//     every 36s from the hour's start, with latencies 30×50ms, 40×100ms,
//     25×200ms and 5×800ms; the same for beta in hours 1 and 2, 18s later
//     and with latencies three times as long;
//   - per hour, 10 failures of alpha 17s after every sixth minute: 4 reach
//     limit (20ms), 3 server error (400ms), 2 timeout (30s), 1 invalid key
//     (10ms); and 3 of status Failed (5ms) at 1:30:05, 1:31:05, 1:32:05;
//   - beta: 5 client errors (60ms) at 1:10:07 and each minute after,
//     5 network errors (1s) from 1:40:07, 2 cancels (2s) at 2:15:03 and
//     2:16:03;
//   - gamma: 7 successes (10ms) from 0:05:00, one a minute, and 2 invalid
//     keys (10ms) at 0:20:00 and 0:21:00;
//   - the empty key: 20 "no key available" (latency 0) from 2:00:01, one
//     every 3 minutes;
//   - a burst in minute 3:01: alpha at 3:01:00, :05, :05.5 (reach limit),
//     :10, :30 (server error), :59.999; beta at :05, :20 (timeout), :45; the
//     empty key at :30 (no key available); all 100ms unless named;
//   - the newest event: a success of alpha at 3:02:00.
//
// That is 340 events of alpha, 215 of beta, 9 of gamma and 21 without a
// key: 585 in all.
//
// Models, clients and usage, by the event's number n in the order above
// (before shuffling; see [Usage]): alpha's events are of ModelA for even
// n, ModelB for odd, and of the client "" (none), ClientWeb and
// ClientBatch for n%3 = 0, 1 and 2; beta's of ModelB and ClientBatch;
// the empty key's of ModelA for even n, of no model for odd, without a
// client; gamma's of neither. Successes of alpha and beta say their
// tokens, ModelA's also their cost; gamma's successes say their units.
// Every other value is not known (-1).
func Events(base time.Time) []recorder.Event {
	var evs []recorder.Event
	add := func(key string, at time.Duration, st status.Status, lat time.Duration) {
		e := recorder.Unknown()
		e.Time = base.Add(at)
		e.KeyID = key
		e.Status = st
		e.HTTPStatus = httpStatus[st]
		e.Latency = lat
		e.Attempt = 1
		e.Method = "POST"
		e.Host = "api.example.com"
		e.Operation = "test"
		if key != "" {
			e.KeyFingerprint = "fp-" + key
		}
		if st != status.Success {
			e.ErrorType = st.String()
		}
		Usage(&e, len(evs))
		evs = append(evs, e)
	}
	successLatency := func(i int) time.Duration {
		switch r := i * 37 % 100; {
		case r < 30:
			return 50 * time.Millisecond
		case r < 70:
			return 100 * time.Millisecond
		case r < 95:
			return 200 * time.Millisecond
		default:
			return 800 * time.Millisecond
		}
	}
	alphaFailures := [10]status.Status{status.ReachLimit, status.ReachLimit, status.ReachLimit, status.ReachLimit,
		status.ServerError, status.ServerError, status.ServerError, status.Timeout, status.Timeout, status.InvalidKey}
	failureLatency := map[status.Status]time.Duration{status.ReachLimit: 20 * time.Millisecond,
		status.ServerError: 400 * time.Millisecond, status.Timeout: 30 * time.Second, status.InvalidKey: 10 * time.Millisecond}
	for h := range time.Duration(3) {
		for i := range 100 {
			at := h*time.Hour + time.Duration(i)*36*time.Second
			add(KeyAlpha, at, status.Success, successLatency(i))
			if h > 0 {
				add(KeyBeta, at+18*time.Second, status.Success, 3*successLatency(i))
			}
		}
		for j, st := range alphaFailures {
			add(KeyAlpha, h*time.Hour+time.Duration(j)*6*time.Minute+17*time.Second, st, failureLatency[st])
		}
	}
	for j := range time.Duration(3) {
		add(KeyAlpha, time.Hour+(30+j)*time.Minute+5*time.Second, status.Failed, 5*time.Millisecond)
	}
	for j := range time.Duration(5) {
		add(KeyBeta, time.Hour+(10+j)*time.Minute+7*time.Second, status.ClientError, 60*time.Millisecond)
		add(KeyBeta, time.Hour+(40+j)*time.Minute+7*time.Second, status.NetworkError, time.Second)
	}
	add(KeyBeta, 2*time.Hour+15*time.Minute+3*time.Second, status.Canceled, 2*time.Second)
	add(KeyBeta, 2*time.Hour+16*time.Minute+3*time.Second, status.Canceled, 2*time.Second)
	for j := range time.Duration(7) {
		add(KeyGamma, (5+j)*time.Minute, status.Success, 10*time.Millisecond)
	}
	add(KeyGamma, 20*time.Minute, status.InvalidKey, 10*time.Millisecond)
	add(KeyGamma, 21*time.Minute, status.InvalidKey, 10*time.Millisecond)
	for j := range time.Duration(20) {
		add(KeyNone, 2*time.Hour+j*3*time.Minute+time.Second, status.NoKeyAvailable, 0)
	}
	const ms = time.Millisecond
	burst := burstStart
	add(KeyAlpha, burst, status.Success, 100*ms)
	add(KeyAlpha, burst+5*time.Second, status.Success, 100*ms)
	add(KeyAlpha, burst+5500*ms, status.ReachLimit, 100*ms)
	add(KeyAlpha, burst+10*time.Second, status.Success, 100*ms)
	add(KeyAlpha, burst+30*time.Second, status.ServerError, 100*ms)
	add(KeyAlpha, burst+59999*ms, status.Success, 100*ms)
	add(KeyBeta, burst+5*time.Second, status.Success, 100*ms)
	add(KeyBeta, burst+20*time.Second, status.Timeout, 100*ms)
	add(KeyBeta, burst+45*time.Second, status.Success, 100*ms)
	add(KeyNone, burst+30*time.Second, status.NoKeyAvailable, 100*ms)
	add(KeyAlpha, newestOffset, status.Success, 100*ms)

	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	return evs
}

// Usage sets the model, client and usage of the suite's event number n
// (see [Events]), from its key and status:
//
//   - the tokens of alpha's and beta's successes: 100+n%50 input, 10+n%7
//     output (unknown when n%10 = 9: a stream that ended without its
//     output), and cached 0 (a known zero) for n%4 = 1, 40 for n%4 = 2
//     or 3, unknown for n%4 = 0;
//   - their cost when of ModelA and their tokens known: input/1000 +
//     output/100 (ModelB has no price: its cost is unknown);
//   - the units of gamma's successes: 2.5, and 0 (a known zero) for every
//     third n.
func Usage(e *recorder.Event, n int) {
	switch e.KeyID {
	case KeyAlpha:
		e.Model = [...]string{ModelA, ModelB}[n%2]
		e.Client = [...]string{"", ClientWeb, ClientBatch}[n%3]
	case KeyBeta:
		e.Model, e.Client = ModelB, ClientBatch
	case KeyNone:
		if n%2 == 0 {
			e.Model = ModelA
		}
	}
	if e.Status != status.Success {
		return
	}
	switch e.KeyID {
	case KeyAlpha, KeyBeta:
		e.InputTokens, e.OutputTokens = int64(100+n%50), int64(10+n%7)
		if n%10 == 9 {
			e.OutputTokens = -1
		}
		e.CachedTokens = [...]int64{-1, 0, 40, 40}[n%4]
		if e.Model == ModelA && e.OutputTokens >= 0 {
			e.Cost = float64(e.InputTokens)/1000 + float64(e.OutputTokens)/100
		}
	case KeyGamma:
		e.Units = 2.5
		if n%3 == 0 {
			e.Units = 0
		}
	}
}

const (
	burstStart   = 3*time.Hour + time.Minute // the minute of the burst
	newestOffset = 3*time.Hour + 2*time.Minute
)

var httpStatus = map[status.Status]int{
	status.Success: 200, status.ReachLimit: 429, status.ServerError: 503,
	status.InvalidKey: 401, status.ClientError: 400,
}
