package redisstate

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/apipool-ng/apipool/sharedstate"
)

// message is a sharedstate.Change as published on the channel:
//
//	{"kind":"cooldown","key":"k1","until":1767225600000,"at":1767225570000}
//	{"kind":"disable","key":"k1","reason":"401 from upstream","at":1767225570000}
//	{"kind":"enable","key":"k1","at":1767225570000}
//	{"kind":"learned","key":"k1","limit":10,"window":1000,"at":1767225570000}
//
// Times are milliseconds since the Unix epoch, as is a learned limit's
// window. A cooldown's until is rounded up, so that the shared deadline
// never ends before the local one.
type message struct {
	Kind   string `json:"kind"`
	Key    string `json:"key"`
	Until  int64  `json:"until,omitempty"`
	Reason string `json:"reason,omitempty"`
	Limit  int64  `json:"limit,omitempty"`
	Window int64  `json:"window,omitempty"`
	At     int64  `json:"at,omitempty"`
}

// learnedEntry is a value of the learned hash: a learned limit of N
// requests in any window of W ms, set at At (ms).
type learnedEntry struct {
	N  int64 `json:"n"`
	W  int64 `json:"w"`
	At int64 `json:"at"`
}

// maxLearned bounds a learned limit, and maxLearnedWindow its window (ms):
// larger ones are invalid or malformed. The pool learns at most 256
// requests in a second or a minute.
const (
	maxLearned       = 1 << 20
	maxLearnedWindow = 3600 * 1000
)

// disabledEntry is a value of the disabled hash.
type disabledEntry struct {
	Reason string `json:"reason"`
	At     int64  `json:"at"`
	// Until is when a trial request may test the key again (ms), 0 when
	// the key is disabled for good.
	Until int64 `json:"until,omitempty"`
}

// maxMessage bounds the messages Watch decodes; longer ones are malformed.
const maxMessage = 64 << 10

// maxMs is the last millisecond of year 9999: later times are malformed.
const maxMs = 253402300799999

// maxKeyID bounds key IDs (the pool allows 256 bytes).
const maxKeyID = 1024

// validChange checks a change before it is published.
func validChange(c sharedstate.Change) error {
	switch {
	case c.KeyID == "":
		return fmt.Errorf("%w: empty key ID", ErrInvalid)
	case len(c.KeyID) > maxKeyID:
		return fmt.Errorf("%w: key ID longer than %d bytes", ErrInvalid, maxKeyID)
	case !utf8.ValidString(c.KeyID):
		return fmt.Errorf("%w: key ID is not valid UTF-8", ErrInvalid)
	}
	switch c.Kind {
	case sharedstate.Cooldown:
		if c.Until.IsZero() {
			return fmt.Errorf("%w: cooldown of %q without a deadline", ErrInvalid, c.KeyID)
		}
		if ms := ceilMs(c.Until); ms <= 0 || ms > maxMs {
			return fmt.Errorf("%w: cooldown of %q until %v, out of range", ErrInvalid, c.KeyID, c.Until)
		}
	case sharedstate.Disable, sharedstate.Enable:
	case sharedstate.Learned:
		if c.Limit < 1 || c.Limit > maxLearned {
			return fmt.Errorf("%w: learned limit %d of %q, out of range", ErrInvalid, c.Limit, c.KeyID)
		}
		if c.Window < time.Millisecond || c.Window > maxLearnedWindow*time.Millisecond || c.Window%time.Millisecond != 0 {
			return fmt.Errorf("%w: learned window %v of %q, want whole milliseconds up to an hour", ErrInvalid, c.Window, c.KeyID)
		}
	default:
		return fmt.Errorf("%w: unknown change kind %d", ErrInvalid, c.Kind)
	}
	return nil
}

// encodeChange returns the message for c, which validChange accepted, with
// its time at (c.At, or now when zero) in ms.
func encodeChange(c sharedstate.Change, at int64) []byte {
	m := message{Kind: c.Kind.String(), Key: c.KeyID, At: at}
	switch c.Kind {
	case sharedstate.Cooldown:
		m.Until = ceilMs(c.Until)
	case sharedstate.Disable:
		m.Reason = c.Reason
		if !c.Until.IsZero() {
			m.Until = max(ceilMs(c.Until), 0)
		}
	case sharedstate.Learned:
		m.Limit, m.Window = int64(c.Limit), c.Window.Milliseconds()
	}
	b, err := json.Marshal(m)
	if err != nil { // cannot happen: strings and integers only
		panic(err)
	}
	return b
}

// decodeChange decodes a message; ok is false when it is malformed.
func decodeChange(payload string) (c sharedstate.Change, ok bool) {
	if len(payload) > maxMessage {
		return c, false
	}
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		return c, false
	}
	if m.Key == "" || len(m.Key) > maxKeyID || m.At < 0 || m.At > maxMs {
		return c, false
	}
	c.KeyID = m.Key
	if m.At > 0 {
		c.At = time.UnixMilli(m.At)
	}
	switch m.Kind {
	case "cooldown":
		if m.Until <= 0 || m.Until > maxMs {
			return c, false
		}
		c.Kind, c.Until = sharedstate.Cooldown, time.UnixMilli(m.Until)
	case "disable":
		c.Kind, c.Reason = sharedstate.Disable, m.Reason
		if m.Until > 0 && m.Until <= maxMs {
			c.Until = time.UnixMilli(m.Until)
		}
	case "enable":
		c.Kind = sharedstate.Enable
	case "learned":
		e, ok := validLearned(learnedEntry{N: m.Limit, W: m.Window, At: m.At})
		if !ok {
			return sharedstate.Change{}, false
		}
		c = e.change(m.Key)
	default:
		return sharedstate.Change{}, false
	}
	return c, true
}

// decodeDeadline decodes a value of the cooldown hash.
func decodeDeadline(v string) (time.Time, bool) {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 || ms > maxMs {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// decodeDisabled decodes a value of the disabled hash.
func decodeDisabled(v string) (disabledEntry, bool) {
	var e disabledEntry
	if len(v) > maxMessage || json.Unmarshal([]byte(v), &e) != nil || e.At < 0 || e.At > maxMs || e.Until < 0 || e.Until > maxMs {
		return e, false
	}
	return e, true
}

// ceilMs is t in ms since the epoch, rounded up.
func ceilMs(t time.Time) int64 {
	ms := t.UnixMilli() // rounded down: the nanoseconds count up from a whole second
	if t.Nanosecond()%1e6 != 0 {
		ms++
	}
	return ms
}

// validLearned checks a learned limit read from Redis.
func validLearned(e learnedEntry) (learnedEntry, bool) {
	ok := e.N >= 1 && e.N <= maxLearned && e.W >= 1 && e.W <= maxLearnedWindow && e.At > 0 && e.At <= maxMs
	return e, ok
}

// decodeLearned decodes a value of the learned hash.
func decodeLearned(v string) (learnedEntry, bool) {
	var e learnedEntry
	if len(v) > maxMessage || json.Unmarshal([]byte(v), &e) != nil {
		return e, false
	}
	return validLearned(e)
}

// change returns the Learned change of key id that e holds.
func (e learnedEntry) change(id string) sharedstate.Change {
	return sharedstate.Change{KeyID: id, Kind: sharedstate.Learned, Limit: int(e.N), Window: time.Duration(e.W) * time.Millisecond, At: time.UnixMilli(e.At)}
}
