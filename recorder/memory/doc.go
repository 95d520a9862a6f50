// Package memory is apipool's embedded usage store: a [recorder.Recorder]
// and [recorder.Stats] (and [recorder.MultiStats]) that keeps counters and
// latency histograms in memory, in time buckets over a fixed retention, so
// that its memory is bounded whatever the traffic.
//
// # Storage
//
// For each series, the events of one key with one model and one client
// (Event.Model and Event.Client; events without a key are kept under the
// key "", and a key whose events carry neither model nor client has one
// series), the store keeps time buckets in tiers:
//
//   - seconds: a count per status for each of the last 5 minutes' seconds;
//   - minutes: a count per status for each minute of the retention, and a
//     latency histogram per status class for each of the last 60 minutes;
//   - hours: a count per status and latency histograms for each hour of the
//     retention;
//   - usage: per status, for each minute of the retention, the sums of the
//     tokens (input, output, cached), units and cost the events said, and
//     how many events said them (see [Store.TotalsBy]).
//
// Only the buckets, statuses and histogram bins that hold events take
// memory: each tier is a ring of the buckets in use, sorted by time. A
// query's Model and Client select series; its answers per key add up the
// key's series.
//
// An event goes into the buckets of its own time, Event.Time, not of the
// clock: the rings of a key end at its newest event, and the store's
// retention (24 hours by default, [WithRetention]) ends at the newest event
// of any key. An event older than the retention when it is recorded, or
// from before 1970, is not kept and is counted in [Store.TooOld]. An event
// more than a minute ([WithMaxFuture]) ahead of the clock is not kept and is
// counted in [Store.TooNew]: it would otherwise push every other event out
// of the retention.
//
// # Precision of counts
//
// An event within the 5 minutes up to its series' newest event counts at
// its second; an older one counts at the start of its minute. A query counts the
// events whose counting time is in [Since, Until). So UsageByKey,
// UsageCount, Series and the Count of LatencyByKey are exact for bounds that
// are whole minutes, and for bounds that are whole seconds within those 5
// minutes; a bound inside a second counts the events of that second as if
// they happened at its start. Series buckets always add up to the count of
// their range. [Store.TotalsBy] counts every event at the start of its
// minute: its totals are exact for bounds that are whole minutes.
//
// # Precision of latencies
//
// Latency histograms have 224 log-linear bins: one per microsecond below
// 16µs, then 8 per power of two up to 2^30µs (17m54s); longer latencies fall
// in the last bin. A quantile is the nearest-rank quantile of the bins,
// reported as its bin's midpoint: within 6.25% of the exact nearest-rank
// value (1µs below 16µs).
//
// The histograms cover whole minutes for the last 60 minutes before the
// series' newest event, and whole hours before: the quantiles of a window are
// those of the minutes it touches, and of the whole hours it touches before
// the last 60 minutes; a window aligned to whole hours, or to whole minutes
// in the last hour, has exact quantiles up to the bin error. There are three
// histograms per bucket, for Success, ReachLimit, and every other status:
// a query filtered by a finer status, such as Timeout, gets the quantiles of
// its class (Failed); its Count is exact.
//
// # Statuses
//
// Every status that package status defines has its own counters. Events
// with other ids are counted together as a status of class Failed: they
// match the filters Unknown and Failed, and a query filtered by an undefined
// status returns an error wrapping [recorder.ErrBadQuery].
//
// # Memory
//
// A series' memory grows with its events in the retention, not with the
// retention or the number of series: a key with one event takes under
// 1.6 KB.
// Each tier's ring takes 16 bytes per (second, status) with events in the
// last 5 minutes and per (minute, status) with events in the retention, and
// 40 bytes per minute with events in the last hour and per hour with events
// in the retention (plus 96 bytes of counts per hour), and 64 bytes per
// (minute, status) whose events said any of their tokens, units or cost
// (none for events whose usage is not known, -1); rings double when
// full and halve when an eighth is in use. A histogram (per bucket and
// status class with events) takes 32 bytes and 4 bytes per latency bin in
// use, up to 32 bins, then 896 bytes. So a key's memory is at most about
// 16·(300·S + R·S) + 40·(60 + H) + 96·H + 928·C·(60 + H) bytes, doubled for
// the rings' slack, for S statuses and C classes in use, R minutes of
// retention and H hour buckets (R = 1,440 and H = 25 by default), plus
// 64·R·S for usage: 330 to 420 KB for a key with events of three statuses
// in every second and latencies over more than 32 bins in every minute,
// and far less for a key with fewer events. An hour of traffic at 100
// events a second spread over 1,000 keys takes about 13 KB a key; over 10
// keys, about 125 KB a key (see bench/README.md); about 0.66 bytes an
// event (BenchmarkMemoryPerEvent). The same traffic with 2 models and 3
// clients, tokens and cost on its successes, makes 60 series of 10 keys
// and takes about 3.4 bytes an event: each series has its own buckets.
// [WithMaxKeys] bounds the number of keys (1024 by default) and
// [WithMaxSeries] the number of series (8192): when one is reached, a new
// key or series replaces those without any event in the retention, and if
// there are none its events are dropped and counted in [Store.Dropped].
// Beside the series, the buffers of events on their way to their series
// take about 5.6 KB per processor that records (at most 2·GOMAXPROCS of
// them, 4 at least: 2 KB of events and 3.5 KB for the 64 series it
// remembers), and 4.5 KB more once it records an event with a model, a
// client or usage.
//
// # Speed
//
// Record takes about 50 nanoseconds on average (BenchmarkRecord). It holds
// each event in a buffer of its processor's (up to 64 events within two
// seconds) and counts a buffer's events in their keys' buckets together:
// counting one event touches about ten cache lines of its key's buckets,
// which a batch loads once, rather than once an event from another CPU or
// from behind the caller's own work. The call that fills a buffer, or that
// records an event outside the two seconds held, counts what is held: 2.7
// µs for a full buffer of ten keys' events. Each buffer remembers the
// series of up to 64 (key, model, client)s it counted, at slots chosen by
// a few of their bytes; the others are found in a copy-on-write map of
// keys, and a key's series in a sorted copy-on-write list. At a steady rate
// it does not allocate: expired histograms are reused, and rings only grow
// when a key's traffic does (and once an hour, for the hour's counts).
// Queries lock one key's series at a time; over 100 keys and 24 hours, UsageByKey,
// UsageCount and LatencyByKey take well under a
// millisecond (see BenchmarkQuery).
package memory
