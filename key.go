package apipool

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// Secret is an API key's secret value. Every way of printing it redacts it:
// fmt's verbs, slog, and JSON. Use [Secret.Reveal] to get the value.
type Secret string

const redacted = "[REDACTED]"

// String returns "[REDACTED]".
func (Secret) String() string { return redacted }

// GoString returns "[REDACTED]", for %#v.
func (Secret) GoString() string { return redacted }

// Format writes "[REDACTED]" for every fmt verb. String alone covers
// only %v, %s, %q and %x: fmt prints a string-kinded value as it is for
// the other verbs (%d, %t...), inside its "%!d(...)" complaint.
func (Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		io.WriteString(f, strconv.Quote(redacted))
		return
	}
	io.WriteString(f, redacted)
}

// LogValue returns "[REDACTED]" for log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes "[REDACTED]".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes "[REDACTED]".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// Key is one API key of the pool. ID and Secret are required; the other
// fields are optional limits, whose zero value means "no limit".
//
// A Key's String, GoString, LogValue and JSON encoding never show the
// secret.
type Key struct {
	// ID names the key in stats, spans and snapshots. Required, unique in
	// a pool, and never the secret itself.
	ID string
	// Secret is what is sent to the upstream.
	Secret Secret
	// Weight is the key's share for the Weighted strategy. 0 means 1.
	Weight int
	// MaxInFlight caps the requests using this key at once (until their
	// response body is closed). 0 means no cap.
	MaxInFlight int
	// PerSecond and PerMinute cap the key's request rate, each a sliding
	// window: no interval of one second holds more than PerSecond requests
	// and none of one minute more than PerMinute, wherever the interval
	// starts (all of them may go at once). A fraction of PerSecond above 1
	// is dropped (2.5 allows 2 in any second); below 1, PerSecond allows
	// one request in any 1/PerSecond seconds (0.5: one in any two). With
	// WithSharedState the same windows hold for all the replicas together,
	// exactly, as long as their clocks agree (see package redisstate). 0
	// means no cap.
	PerSecond float64
	PerMinute int
	// PerDay caps the key's requests per quota day: the calendar day in
	// the pool's quota location (WithQuotaLocation, UTC by default), from
	// one midnight to the next, not any 24 hours. With WithSharedState it
	// holds for all the replicas together. 0 means no cap.
	PerDay int
	// Tier orders the keys: a request takes a key of the lowest tier that
	// has one eligible (0, the default, first), by the pool's strategy
	// among that tier's keys, and goes on to the next tier at once when
	// none of it is eligible. Negative tiers are refused. See the
	// README's "Routing: tiers, models, sessions".
	Tier int
	// Models lists the models the key serves, each an exact name
	// ("gpt-4o") or a prefix ending in "*" ("gpt-4o*", "claude-*"); empty
	// means every model. Only a pool with WithModel knows a request's
	// model: New and AddKey refuse Models without it. A request whose
	// model no key serves fails at once with a *NoModelError; a request
	// whose model is not known ("") may take any key.
	Models []string
	// Budget caps the tokens and the cost the key may spend per minute,
	// day or month, counted from its answers (WithUsage; a cost budget
	// needs its price table, and WithModel or a "*" price: New refuses a
	// budget the pool cannot count).
	// A key that used up a budget rests until the budget's period ends,
	// and the pool takes the next key, or the next tier; a request that
	// finds none fails with a *NoKeyError whose RetryAt is the earliest
	// end. The count grows when an answer's body ends, so requests in
	// flight may overshoot the budget: by at most their units (see the
	// README's "Budgets"). With WithSharedState on a store that is a
	// sharedstate.Spender (redisstate), the replicas count together. The
	// zero value sets none.
	Budget Budget
}

// String describes the key without its secret.
func (k Key) String() string {
	return "apipool.Key{ID: " + strconv.Quote(k.ID) + ", Secret: " + redacted + "}"
}

// GoString describes the key without its secret, for %#v.
func (k Key) GoString() string { return k.String() }

// Format prints String for every fmt verb: without it a verb such as %d
// prints a *Key field's secret inside fmt's "%!d(...)" complaint.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		io.WriteString(f, strconv.Quote(k.String()))
		return
	}
	io.WriteString(f, k.String())
}

// LogValue describes the key without its secret, for log/slog.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", k.ID), slog.String("secret", redacted))
}

// MarshalJSON encodes the key with its secret redacted.
func (k Key) MarshalJSON() ([]byte, error) {
	type public struct {
		ID          string   `json:"id"`
		Secret      string   `json:"secret"`
		Weight      int      `json:"weight,omitempty"`
		MaxInFlight int      `json:"max_in_flight,omitempty"`
		PerSecond   float64  `json:"per_second,omitempty"`
		PerMinute   int      `json:"per_minute,omitempty"`
		PerDay      int      `json:"per_day,omitempty"`
		Tier        int      `json:"tier,omitempty"`
		Models      []string `json:"models,omitempty"`
		Budget      *Budget  `json:"budget,omitempty"`
	}
	var b *Budget
	if !k.Budget.IsZero() {
		b = &k.Budget
	}
	return json.Marshal(public{k.ID, redacted, k.Weight, k.MaxInFlight, k.PerSecond, k.PerMinute, k.PerDay, k.Tier, k.Models, b})
}

// defaultFingerprintKey is the HMAC key of fingerprints when the pool is
// given none. It is public, so the fingerprint of a guessable secret can be
// guessed: set WithFingerprintKey in production.
var defaultFingerprintKey = []byte("apipool fingerprint v1")

// Fingerprint returns the keyed hash by which stats and spans may name a
// secret without revealing it: the first 8 bytes of HMAC-SHA256(hmacKey,
// secret), in hex. A nil hmacKey means the library's default key.
func Fingerprint(hmacKey []byte, secret Secret) string {
	if hmacKey == nil {
		hmacKey = defaultFingerprintKey
	}
	m := hmac.New(sha256.New, hmacKey)
	m.Write([]byte(secret))
	return hex.EncodeToString(m.Sum(nil)[:8])
}
