package status

import (
	"slices"
	"testing"
)

func TestIDsAndStrings(t *testing.T) {
	for _, c := range []struct {
		s    Status
		id   int
		name string
	}{
		{Unknown, 0, "unknown"},
		// apipool-ng's ids and descriptions.
		{Success, 1, "success"},
		{Failed, 5, "failed"},
		{ReachLimit, 9, "reach limit"},
		{RateLimited, 9, "reach limit"},
		{InvalidKey, 11, "invalid key"},
		{ServerError, 12, "server error"},
		{ClientError, 13, "client error"},
		{Timeout, 14, "timeout"},
		{Canceled, 15, "canceled"},
		{NetworkError, 16, "network error"},
		{NoKeyAvailable, 17, "no key available"},
		{Status(2), 2, "status(2)"},
		{Status(10), 10, "status(10)"},
		{Status(18), 18, "status(18)"},
		{Status(255), 255, "status(255)"},
	} {
		if got := c.s.ID(); got != c.id {
			t.Errorf("%v.ID() = %d, want %d", c.s, got, c.id)
		}
		if got := c.s.String(); got != c.name {
			t.Errorf("Status(%d).String() = %q, want %q", c.id, got, c.name)
		}
	}
}

func TestAll(t *testing.T) {
	want := []Status{Success, Failed, ReachLimit, InvalidKey, ServerError, ClientError, Timeout, Canceled, NetworkError, NoKeyAvailable}
	if !slices.Equal(All, want) {
		t.Errorf("All = %v, want %v", All, want)
	}
	if !slices.IsSorted(All) {
		t.Error("All is not in id order")
	}
}

func TestValidAndFromID(t *testing.T) {
	valid := map[int]bool{1: true, 5: true, 9: true, 11: true, 12: true, 13: true, 14: true, 15: true, 16: true, 17: true}
	for id := -2; id < 300; id++ {
		s, ok := FromID(id)
		if ok != valid[id] {
			t.Errorf("FromID(%d) ok = %v, want %v", id, ok, valid[id])
		}
		if ok && s.ID() != id {
			t.Errorf("FromID(%d) = %v", id, s)
		}
		if !ok && s != Unknown {
			t.Errorf("FromID(%d) = %v, want Unknown with false", id, s)
		}
		if id >= 0 && id < 256 && Status(id).Valid() != valid[id] {
			t.Errorf("Status(%d).Valid() = %v, want %v", id, Status(id).Valid(), valid[id])
		}
	}
}

func TestClass(t *testing.T) {
	for _, c := range []struct {
		s, class Status
	}{
		{Unknown, Unknown},
		{Success, Success},
		{ReachLimit, ReachLimit},
		{Failed, Failed},
		{InvalidKey, Failed},
		{ServerError, Failed},
		{ClientError, Failed},
		{Timeout, Failed},
		{Canceled, Failed},
		{NetworkError, Failed},
		{NoKeyAvailable, Failed},
		{Status(2), Failed},
		{Status(200), Failed},
	} {
		if got := c.s.Class(); got != c.class {
			t.Errorf("%v.Class() = %v, want %v", c.s, got, c.class)
		}
	}
}

func TestMatches(t *testing.T) {
	statuses := append([]Status{Unknown, Status(2), Status(200)}, All...)
	// For each filter, the statuses it matches.
	for _, c := range []struct {
		filter Status
		want   []Status
	}{
		{Unknown, statuses},
		{Success, []Status{Success}},
		{ReachLimit, []Status{ReachLimit}},
		{Failed, []Status{Status(2), Status(200), Failed, InvalidKey, ServerError, ClientError, Timeout, Canceled, NetworkError, NoKeyAvailable}},
		{InvalidKey, []Status{InvalidKey}},
		{ServerError, []Status{ServerError}},
		{ClientError, []Status{ClientError}},
		{Timeout, []Status{Timeout}},
		{Canceled, []Status{Canceled}},
		{NetworkError, []Status{NetworkError}},
		{NoKeyAvailable, []Status{NoKeyAvailable}},
		{Status(2), []Status{Status(2)}},
	} {
		var got []Status
		for _, s := range statuses {
			if s.Matches(c.filter) {
				got = append(got, s)
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(c.want))
		if !slices.Equal(got, want) {
			t.Errorf("statuses matching %v = %v, want %v", c.filter, got, want)
		}
	}
}
