// Package status names the outcome of one attempt of a request through an
// apipool transport and classifies HTTP responses and transport errors into
// those outcomes. It also reads what a response's rate-limit headers say
// about its key's quota ([ParseBudget], [RateLimitEvidence]), so that a
// pool can move off a key before the upstream refuses it.
//
// The three statuses of apipool-ng keep their ids and descriptions
// (1 "success", 5 "failed", 9 "reach limit"), so queries written against
// apipool-ng's StatusCollection keep their meaning. The finer statuses that
// apipool adds each belong to one of those three classes; see [Status.Class].
package status

import "strconv"

// Status is the outcome of one attempt. The zero value is [Unknown].
type Status uint8

// The statuses. Ids 1, 5 and 9 are apipool-ng's; the others are finer kinds
// of failure, each of class [Failed] except [RateLimited], which is an alias
// of [ReachLimit].
const (
	Unknown        Status = 0
	Success        Status = 1  // apipool-ng c1_Success
	Failed         Status = 5  // apipool-ng c5_Failed: any failure not named below
	ReachLimit     Status = 9  // apipool-ng c9_ReachLimit: the upstream rate-limited the key
	InvalidKey     Status = 11 // the upstream rejected the key (revoked, wrong, unpaid)
	ServerError    Status = 12 // a 5xx answer
	ClientError    Status = 13 // a 4xx answer other than rate limit or invalid key
	Timeout        Status = 14 // the attempt timed out
	Canceled       Status = 15 // the caller canceled the request
	NetworkError   Status = 16 // the connection failed or broke
	NoKeyAvailable Status = 17 // no key could be used, so nothing was sent

	// RateLimited is the Go name of apipool-ng's "reach limit".
	RateLimited = ReachLimit
)

// All lists every status except Unknown, in id order.
var All = []Status{Success, Failed, ReachLimit, InvalidKey, ServerError, ClientError, Timeout, Canceled, NetworkError, NoKeyAvailable}

var names = [...]string{
	Unknown:        "unknown",
	Success:        "success",
	Failed:         "failed",
	ReachLimit:     "reach limit",
	InvalidKey:     "invalid key",
	ServerError:    "server error",
	ClientError:    "client error",
	Timeout:        "timeout",
	Canceled:       "canceled",
	NetworkError:   "network error",
	NoKeyAvailable: "no key available",
}

// ID returns the numeric id stored in usage events.
func (s Status) ID() int { return int(s) }

// String returns the status's description, as apipool-ng spelled it for
// ids 1, 5 and 9 ("success", "failed", "reach limit").
func (s Status) String() string {
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Valid reports whether s is one of the defined statuses other than Unknown.
func (s Status) Valid() bool {
	return s != Unknown && int(s) < len(names) && names[s] != ""
}

// Class maps a status to apipool-ng's three: Success, ReachLimit, or Failed
// for every other known status. Unknown maps to Unknown.
func (s Status) Class() Status {
	switch s {
	case Unknown:
		return Unknown
	case Success, ReachLimit:
		return s
	default:
		return Failed
	}
}

// Matches reports whether an event of status s matches the filter f, the
// way stats queries filter: Unknown matches everything; apipool-ng's ids
// (Success, Failed, ReachLimit) match by class, so Failed matches every kind
// of failure; any other status matches only itself.
func (s Status) Matches(f Status) bool {
	switch f {
	case Unknown:
		return true
	case Success, Failed, ReachLimit:
		return s.Class() == f
	default:
		return s == f
	}
}

// FromID returns the status with the given id, and whether it is defined.
func FromID(id int) (Status, bool) {
	if id <= 0 || id >= len(names) || names[id] == "" {
		return Unknown, false
	}
	return Status(id), true
}
