package memory

import (
	"context"
	"fmt"

	"github.com/apipool-ng/apipool/recorder"
)

// TotalsBy returns the totals of the events matching q (tokens, units and
// cost summed over the events that said them; the others counted as
// unknown), grouped by key, model or client (events with an empty value
// under ""). See recorder.TotalsStats.
//
// It counts every event at the start of its minute: the totals are exact
// for windows whose bounds are whole minutes, and a bound inside a minute
// counts the events of that minute as if they happened at its start. (So
// Totals.Events may differ from UsageCount for such a window over the
// last 5 minutes, where UsageCount counts by the second.) A by other than
// recorder.ByKey, ByModel and ByClient gives an error wrapping
// recorder.ErrBadQuery.
func (s *Store) TotalsBy(ctx context.Context, q recorder.Query, by recorder.GroupBy) (map[string]recorder.Totals, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	if by > recorder.ByClient {
		return nil, fmt.Errorf("%w: unknown GroupBy %d", recorder.ErrBadQuery, by)
	}
	f, err := newFilter(q.Status)
	if err != nil {
		return nil, err
	}
	w := windowOf(q)
	// The whole minutes whose start is in the window.
	m0, m1 := (w.a+59)/60, (w.b+59)/60
	type acc struct {
		events int64
		k      known
	}
	accs := map[string]*acc{}
	err = s.each(ctx, q, func(_ string, g group) {
		for _, p := range g {
			k, sp := p.k, &p.sp
			lo, hi := max(m0, sp.mLo), min(m1, sp.mHi+1)
			if lo >= hi {
				continue
			}
			n := k.count(sp, window{lo * 60, hi * 60}, &f)
			if n == 0 {
				continue
			}
			name := k.id.key
			switch by {
			case recorder.ByModel:
				name = k.id.model
			case recorder.ByClient:
				name = k.id.client
			}
			a := accs[name]
			if a == nil {
				a = new(acc)
				accs[name] = a
			}
			a.events += n
			k.sums.sum(lo, hi, &f, &a.k)
		}
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]recorder.Totals, len(accs))
	for name, a := range accs {
		out[name] = a.k.totals(a.events)
	}
	return out, nil
}
