// Package memory is apipool's embedded usage store: a [recorder.Recorder]
// and [recorder.Stats] that keeps counters and latency histograms in
// memory, in time buckets over a fixed retention, so that its memory is
// bounded whatever the traffic.
//
// # Storage
//
// For each key (events without a key are kept under the key ""), the store
// keeps rings of time buckets:
//
//   - seconds: a count per status for each of the last 5 minutes' seconds;
//   - minutes: a count per status for each minute of the retention, and a
//     latency histogram per status class for each of the last 60 minutes;
//   - hours: a count per status and latency histograms for each hour of the
//     retention.
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
// An event within the 5 minutes up to its key's newest event counts at its
// second; an older one counts at the start of its minute. A query counts the
// events whose counting time is in [Since, Until). So UsageByKey,
// UsageCount, Series and the Count of LatencyByKey are exact for bounds that
// are whole minutes, and for bounds that are whole seconds within those 5
// minutes; a bound inside a second counts the events of that second as if
// they happened at its start. Series buckets always add up to the count of
// their range.
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
// key's newest event, and whole hours before: the quantiles of a window are
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
// With the default retention of 24 hours, a key takes 93,568 bytes when it
// is created: 16 KiB of key state (the seconds ring and the minute
// histograms' headers), 72 KiB for the 1,440 minute buckets of 48 bytes,
// and 3.4 KiB for the 25 hour buckets. Each histogram takes 896 bytes, and
// is allocated when its bucket gets its first event of its class: 85 (60
// minutes and 25 hours) per class in use. So a key that always succeeds
// takes about 170 KB, and a key with events of all three classes in every
// minute at most 322 KB. With a retention of R minutes and H = ⌈R/60⌉+1
// hour buckets: 16,384 + 48·R (rounded up to 8 KiB) + 128·H bytes, plus
// 896·(60+H) per class in use. [WithMaxKeys] bounds the number of keys (1024 by default): when it
// is reached, a new key replaces keys without any event in the retention,
// and if there are none its events are dropped and counted in
// [Store.Dropped].
//
// # Speed
//
// Record takes a few tens of nanoseconds, does not allocate once the key's
// buckets are in use, and takes only the key's own mutex: keys are found in
// a copy-on-write map. Queries lock one key at a time; over 100 keys and 24
// hours, UsageByKey, UsageCount and LatencyByKey take well under a
// millisecond (see BenchmarkQuery).
package memory
