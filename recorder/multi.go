package recorder

import (
	"context"
	"time"

	"github.com/apipool-ng/apipool/status"
)

// LatencyBucket is one step of a latency series.
type LatencyBucket struct {
	// Start is the bucket's start, in UTC: the bucket covers
	// [Start, Start+step), cut to the query's [Since, Until).
	Start time.Time
	// Latency is that of the matching events in the bucket: the zero
	// Latency (Count 0) when there was none.
	Latency
}

// MultiStats is implemented by stores that answer in one pass (for a
// database, in one query) what takes several Stats calls otherwise: one
// per status filter, or one per time bucket. It is optional: a store that
// implements Stats alone is complete, and callers check for MultiStats
// with a type assertion and fall back on the Stats methods, which give
// the same answers.
//
// Each method's answer is what the Stats calls it stands for would
// return, to the precision the store documents for those (counts exact
// where they are exact, quantiles approximate where they are
// approximate), with one difference: the answer is taken in one pass, so
// an event recorded meanwhile counts under every filter it matches or
// under none, where separate calls could count it under some only (and
// show, say, more successes than events). Every method
// honours ctx, returns an error wrapping recorder.ErrClosed after the
// store's Close, and one wrapping ErrBadQuery for an invalid query or
// argument. Implementations must be safe for concurrent use.
//
// The store types of this module that implement it: recorder/memory and
// recorder/clickhouse. The fan-out of Fanout and the wrapper of KeepOpen
// implement it when the store that answers their queries does.
type MultiStats interface {
	Stats
	// UsageByKeyMulti returns one map per filter: element i is what
	// UsageByKey returns for q with its Status set to filters[i] (the
	// number of events per key ID matching q and filters[i] as
	// status.Status.Matches says; keys with none absent). q.Status must
	// be Unknown; an empty filters gives an empty result.
	UsageByKeyMulti(ctx context.Context, q Query, filters []status.Status) ([]map[string]int64, error)
	// SeriesMulti returns one map per filter: element i is what Series
	// returns for q with its Status set to filters[i] and step (a minute
	// when 0). Its bounds and step are checked as Series checks them;
	// q.Status must be Unknown.
	SeriesMulti(ctx context.Context, q Query, step time.Duration, filters []status.Status) ([]map[string][]Bucket, error)
	// LatencySeries returns per key the latency of the events matching q
	// in consecutive buckets of step (a minute when 0), aligned as
	// Series's buckets are: to multiples of step since the Unix epoch,
	// from the bucket holding q.Since to the one holding the last
	// instant before q.Until, so in UTC whatever the bounds' location.
	// Bucket j's Latency is what LatencyByKey returns for the key over
	// the bucket cut to [q.Since, q.Until); it is the zero Latency when
	// no event matched in the bucket. Keys without a matching event in
	// the range are absent. Bounds and step are checked as Series checks
	// them. keys, when not empty, limits the answer to those key IDs, as
	// if each were queried in turn with q.KeyID; q.KeyID must then be
	// empty. (A chart of the busiest keys reads only theirs.)
	LatencySeries(ctx context.Context, q Query, step time.Duration, keys []string) (map[string][]LatencyBucket, error)
}
