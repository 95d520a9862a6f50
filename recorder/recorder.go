// Package recorder defines the usage events an apipool transport records,
// one per attempt, the Recorder interface that stores them, and the Stats
// interface through which stores answer usage queries.
//
// The embedded default store is in package recorder/memory; the SQL store
// (SQLite, PostgreSQL, MySQL/MariaDB) is in recorder/sql; the ClickHouse
// store is in recorder/clickhouse. Every store passes the conformance suite
// in recorder/recordertest.
package recorder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apipool-ng/apipool/errdefs"
	"github.com/apipool-ng/apipool/status"
	"go.opentelemetry.io/otel/trace"
)

// Event is the record of one attempt of one request through the pool.
// It never holds a key's secret: only its ID and fingerprint.
type Event struct {
	// Time is when the attempt finished (response headers or error seen).
	Time time.Time
	// KeyID is the ID of the key used; empty when no key was used
	// (status NoKeyAvailable, or a request sent without a key).
	KeyID string
	// KeyFingerprint is the key's keyed-hash fingerprint (hex), or empty.
	KeyFingerprint string
	// Status is the attempt's outcome.
	Status status.Status
	// HTTPStatus is the response's status code, or 0 when there was none.
	HTTPStatus int
	// Latency is the time from sending the attempt to its response headers
	// or error.
	Latency time.Duration
	// Attempt is the attempt's number within its request, from 1.
	Attempt int
	// Method and Host are the request's HTTP method and URL host.
	Method string
	Host   string
	// Operation is the name the caller gave the request through the
	// context (for SDK users, the API operation), or empty.
	Operation string
	// RequestBytes and ResponseBytes are the body sizes when known, else -1.
	RequestBytes  int64
	ResponseBytes int64
	// TraceID and SpanID identify the attempt's span, when traced.
	TraceID trace.TraceID
	SpanID  trace.SpanID
	// ErrorType is a short, secret-free name of the error kind, or empty.
	ErrorType string

	// Model is the model the request asked for (see apipool.WithModel),
	// or empty when not known or not set.
	Model string
	// Client names who sent the request: the proxy's client token name,
	// or what apipool.ContextWithClient gave; empty when not known.
	Client string
	// InputTokens, OutputTokens and CachedTokens are the tokens the
	// answer says it consumed (CachedTokens is the part of InputTokens
	// read from the provider's prompt cache); -1 when not known (no usage
	// reader, an error, a stream that ended without usage). Unknown is
	// never counted as zero.
	InputTokens, OutputTokens, CachedTokens int64
	// Units is the amount the API bills in its own unit (credits,
	// characters), as a usage reader found it; -1 when not known.
	Units float64
	// Cost is the attempt's cost from the pool's price table, in the
	// table's currency; -1 when not known (no table, a model missing
	// from it, tokens not known). Unknown is never counted as free.
	Cost float64
}

// Unknown returns an Event whose measured fields (request and response
// sizes, tokens, units, cost) are set to -1, "not known": the base for
// an Event built by hand, since the zero value of those fields means a
// known zero.
func Unknown() Event {
	return Event{RequestBytes: -1, ResponseBytes: -1, InputTokens: -1, OutputTokens: -1, CachedTokens: -1, Units: -1, Cost: -1}
}

// Recorder stores usage events. Implementations must be safe for concurrent
// use. Record is called on the request path: it must not block on I/O and
// must not retain pointers into the caller's data beyond the Event itself.
// Close flushes what the recorder holds, within ctx, and releases it; Record
// after Close must not panic (an event then is dropped and counted).
type Recorder interface {
	Record(Event)
	Close(ctx context.Context) error
}

// DropCounter is implemented by recorders that can drop events (a full
// queue, a closed recorder). Dropped returns how many were dropped so far.
type DropCounter interface {
	Dropped() uint64
}

// QueueLener is implemented by recorders that queue events before storing
// them. QueueLen returns how many are waiting.
type QueueLener interface {
	QueueLen() int
}

// Query selects events for a stats call. The zero value selects everything.
type Query struct {
	// Since and Until bound the events' Time: Since <= Time < Until.
	// A zero Since means from the earliest, a zero Until means no end.
	Since, Until time.Time
	// KeyID, when not empty, selects one key's events.
	KeyID string
	// Status, when not Unknown, selects events matching it as
	// status.Status.Matches does: apipool-ng's ids 1, 5 and 9 match by
	// class (Failed matches every kind of failure), the others exactly.
	Status status.Status
	// Model and Client, when not empty, select the events of one model
	// and of one client.
	Model, Client string
}

// Check returns an error wrapping ErrBadQuery when both bounds are set and
// Until is before Since: a mistake rather than a question (equal bounds
// are an empty window, and select nothing). Every store's query methods
// call it.
func (q Query) Check() error {
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return fmt.Errorf("%w: Until %s is before Since %s", ErrBadQuery,
			q.Until.UTC().Format(time.RFC3339Nano), q.Since.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// Totals is what a set of events consumed. Sums cover the events whose
// value is known; the Unknown counts say how many events had none, so
// that unknown is never read as zero. Each token sum covers the events
// whose count of that kind is known; TokensUnknown counts the events
// whose input or output tokens are not known (CachedTokens, which not
// every API reports, does not make tokens unknown). A known zero is
// known: summed, not counted as unknown.
type Totals struct {
	Events                                  int64
	InputTokens, OutputTokens, CachedTokens int64
	TokensUnknown                           int64 // events whose input or output tokens are not known
	Units                                   float64
	UnitsUnknown                            int64
	Cost                                    float64
	CostUnknown                             int64
}

// GroupBy names what TotalsBy groups events by.
type GroupBy uint8

const (
	ByKey    GroupBy = iota // Event.KeyID
	ByModel                 // Event.Model
	ByClient                // Event.Client
)

// TotalsStats is implemented by stores that sum the units and cost of
// events. Every store of this module implements it, and so do the
// wrappers of Fanout and KeepOpen when the store that answers their
// queries does.
type TotalsStats interface {
	// TotalsBy returns the totals of the events matching q, grouped by
	// the field by names (events with an empty value under "").
	TotalsBy(ctx context.Context, q Query, by GroupBy) (map[string]Totals, error)
}

// Latency summarises the latencies of a set of events.
type Latency struct {
	Count         int64
	P50, P90, P99 time.Duration
}

// Bucket is one step of a time series.
type Bucket struct {
	Start time.Time // the bucket covers [Start, Start+step)
	Count int64
}

// Stats answers usage queries. Every method honours ctx. Results cover the
// events the store holds: a store with a retention answers for what it
// still keeps.
type Stats interface {
	// UsageByKey returns the number of matching events per key ID
	// (apipool-ng's usage_count_stats_in_recent_n_seconds). Keys with no
	// matching event are absent.
	UsageByKey(ctx context.Context, q Query) (map[string]int64, error)
	// UsageCount returns the number of matching events
	// (apipool-ng's usage_count_in_recent_n_seconds).
	UsageCount(ctx context.Context, q Query) (int64, error)
	// LatencyByKey returns latency quantiles per key over matching events.
	LatencyByKey(ctx context.Context, q Query) (map[string]Latency, error)
	// Series returns per key the count of matching events in consecutive
	// buckets of the given step (a minute when step is 0), aligned to
	// multiples of step since the Unix epoch, from the bucket holding
	// q.Since to the one holding the last instant before q.Until. Both
	// bounds must be set. Empty buckets are included with Count 0.
	Series(ctx context.Context, q Query, step time.Duration) (map[string][]Bucket, error)
}

// ErrClosed is returned, or wrapped, by a store's methods after Close. It
// is the one error of every apipool package for a call after Close: the
// same value as apipool.ErrClosed and errdefs.ErrClosed.
var ErrClosed = errdefs.ErrClosed

// ErrBadQuery is wrapped by errors about an invalid query.
var ErrBadQuery = errors.New("apipool/recorder: bad query")

// ErrNoStats is wrapped by the errors of NoStats: the recorder answers no
// queries.
var ErrNoStats = errors.New("apipool/recorder: the recorder answers no stats queries (it keeps no events, or has no Stats methods)")

// NoStats is the Stats of a recorder that answers no queries (such as
// Nop): every method returns an error wrapping ErrNoStats. A pool's Stats
// method returns it rather than nil, so that a query fails with an error
// that says why; check for it with a type assertion when a missing store
// changes what you do.
type NoStats struct{}

func (NoStats) UsageByKey(context.Context, Query) (map[string]int64, error) { return nil, ErrNoStats }
func (NoStats) UsageCount(context.Context, Query) (int64, error)            { return 0, ErrNoStats }
func (NoStats) LatencyByKey(context.Context, Query) (map[string]Latency, error) {
	return nil, ErrNoStats
}
func (NoStats) Series(context.Context, Query, time.Duration) (map[string][]Bucket, error) {
	return nil, ErrNoStats
}
func (NoStats) TotalsBy(context.Context, Query, GroupBy) (map[string]Totals, error) {
	return nil, ErrNoStats
}

// Nop is a Recorder that discards every event.
type Nop struct{}

func (Nop) Record(Event)                {}
func (Nop) Close(context.Context) error { return nil }

// Fanout returns a Recorder that hands every event to each of rs in turn
// and closes them all. Nil entries are skipped. When one of rs answers
// queries (implements Stats), so does the fan-out, through the first such
// (and it implements MultiStats and TotalsStats when that one does).
func Fanout(rs ...Recorder) Recorder {
	out := make(fanout, 0, len(rs))
	var st Stats
	for _, r := range rs {
		if r != nil {
			out = append(out, r)
			if s, ok := r.(Stats); ok && st == nil {
				st = s
			}
		}
	}
	ts, totals := st.(TotalsStats)
	if ms, ok := st.(MultiStats); ok {
		if totals {
			return fanoutMultiTotals{fanoutMulti{out, ms}, ts}
		}
		return fanoutMulti{out, ms}
	}
	if st != nil {
		if totals {
			return fanoutStatsTotals{fanoutStats{out, st}, ts}
		}
		return fanoutStats{out, st}
	}
	return out
}

// fanoutMultiTotals and fanoutStatsTotals also answer TotalsBy, through
// the member that answers the other queries.
type fanoutMultiTotals struct {
	fanoutMulti
	TotalsStats
}

type fanoutStatsTotals struct {
	fanoutStats
	TotalsStats
}

// fanoutMulti is a fan-out that answers queries through a MultiStats.
type fanoutMulti struct {
	fanout
	MultiStats
}

// fanoutStats is a fan-out that answers queries through one member.
type fanoutStats struct {
	fanout
	Stats
}

type fanout []Recorder

func (f fanout) Record(e Event) {
	for _, r := range f {
		r.Record(e)
	}
}

func (f fanout) Close(ctx context.Context) error {
	var errs []error
	for _, r := range f {
		if err := r.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Dropped sums the drop counts of the recorders that count drops.
func (f fanout) Dropped() uint64 {
	var n uint64
	for _, r := range f {
		if d, ok := r.(DropCounter); ok {
			n += d.Dropped()
		}
	}
	return n
}

// Flusher is implemented by recorders that can write out what they hold
// without closing.
type Flusher interface {
	Flush(ctx context.Context) error
}

// KeepOpen returns r wrapped so that its Close flushes r (when r is a
// Flusher) and leaves it open. Give it to pools that share one store: a
// pool closes its recorder on Close, and the first pool closed would
// otherwise close the store under the others. Close the store yourself
// after the pools. The wrapper answers Stats, MultiStats, TotalsStats,
// Dropped and QueueLen when r does.
func KeepOpen(r Recorder) Recorder {
	k := keepOpen{r}
	ts, totals := r.(TotalsStats)
	if s, ok := r.(MultiStats); ok {
		if totals {
			return keepOpenMultiTotals{keepOpenMulti{k, s}, ts}
		}
		return keepOpenMulti{k, s}
	}
	if s, ok := r.(Stats); ok {
		if totals {
			return keepOpenStatsTotals{keepOpenStats{k, s}, ts}
		}
		return keepOpenStats{k, s}
	}
	return k
}

type keepOpen struct{ Recorder }

func (k keepOpen) Close(ctx context.Context) error {
	if f, ok := k.Recorder.(Flusher); ok {
		return f.Flush(ctx)
	}
	return nil
}

func (k keepOpen) Dropped() uint64 {
	if d, ok := k.Recorder.(DropCounter); ok {
		return d.Dropped()
	}
	return 0
}

func (k keepOpen) QueueLen() int {
	if q, ok := k.Recorder.(QueueLener); ok {
		return q.QueueLen()
	}
	return 0
}

type keepOpenStats struct {
	keepOpen
	Stats
}

type keepOpenMulti struct {
	keepOpen
	MultiStats
}

type keepOpenMultiTotals struct {
	keepOpenMulti
	TotalsStats
}

type keepOpenStatsTotals struct {
	keepOpenStats
	TotalsStats
}
