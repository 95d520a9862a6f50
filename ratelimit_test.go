package apipool

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/status"
)

// budgetAnswer returns OpenAI's rate-limit headers: limit 10, remaining
// left, reset in 1s.
func budgetAnswer(left int) http.Header {
	return http.Header{
		"X-Ratelimit-Limit-Requests":     {"10"},
		"X-Ratelimit-Remaining-Requests": {strconv.Itoa(left)},
		"X-Ratelimit-Reset-Requests":     {"1s"},
	}
}

// A wave of requests sent together reaches the upstream in any order, and
// their answers come back in any order: the count an answer gives takes in
// every request the upstream had counted by then, and the requests still
// out are those not answered yet. Here the first request of the wave was
// counted last (remaining 3) and answered first: the key keeps the 3 it
// has left once the other answers are in (taken less the requests sent
// after it, its count was 3 less 6, and the key sat out its window).
func TestBudgetWaveAnsweredOutOfOrder(t *testing.T) {
	cfg := defaultConfig()
	cfg.finish()
	tr := &Transport{cfg: cfg}
	k := tr.newKeyState(Key{ID: "a", Secret: "s"})
	k.budget.set(10, 10, t0.Add(time.Second), false, t0)

	var wave []reservation
	for range 7 {
		wave = append(wave, mustReserve(t, k, t0))
	}
	if left, _, _ := k.budget.view(t0); left != 3 {
		t.Fatalf("with 7 out of 10: %d left, want 3", left)
	}
	at := t0.Add(50 * time.Millisecond)
	// Remaining as the upstream counted them: the first request 7th, the
	// others in order (9, 8, ..., 4).
	remaining := []int{3, 9, 8, 7, 6, 5, 4}
	for i := range wave {
		tr.learnBudget(&wave[i], budgetAnswer(remaining[i]), at, "")
		wave[i].commit(verdict{st: status.Success, at: at})
		k.release()
	}
	if left, _, _ := k.budget.view(at); left != 3 {
		t.Fatalf("after the wave's answers: %d left, want 3", left)
	}
	for i := range 3 {
		if _, h := k.reserve(at); h != holdNone {
			t.Fatalf("request %d of the 3 left: %v", i+1, h)
		}
	}
	if _, h := k.reserve(at); h != holdBudget {
		t.Fatalf("an 11th request in the window: %v, want %v", h, holdBudget)
	}
}

// An answer that brings no count (no headers: an error page, a proxy's
// answer) still used one of the window's requests: it stays counted, and
// one given back unsent does not.
func TestBudgetAnswerWithoutCount(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	k.budget.set(5, 10, t0.Add(time.Second), false, t0)
	r := mustReserve(t, k, t0)
	r.commit(verdict{st: status.ServerError, at: t0.Add(10 * time.Millisecond)})
	k.release()
	if left, _, _ := k.budget.view(t0); left != 4 {
		t.Fatalf("after an answer without a count: %d left, want 4", left)
	}
	r = mustReserve(t, k, t0)
	if left, _, _ := k.budget.view(t0); left != 3 {
		t.Fatalf("with one out: %d left, want 3", left)
	}
	r.cancel()
	if left, _, _ := k.budget.view(t0); left != 4 {
		t.Fatalf("after a cancel: %d left, want 4", left)
	}
}

// A relative reset counts from when the upstream counted the request,
// which providers do as it arrives: an answer that took long (an LLM's)
// holds the key until its reset counted from at most resetSlack after the
// send, not from the answer; a quick answer's reset counts from the answer.
func TestRelativeResetCountsFromTheSend(t *testing.T) {
	for _, tc := range []struct {
		name    string
		latency time.Duration
		from    time.Duration // after the send
	}{
		{"slow answer", 2 * time.Second, resetSlack},
		{"quick answer", 10 * time.Millisecond, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.finish()
			tr := &Transport{cfg: cfg}
			k := tr.newKeyState(Key{ID: "a", Secret: "s"})
			r := mustReserve(t, k, t0)
			at := t0.Add(tc.latency)
			h := budgetAnswer(0)
			h.Set("X-Ratelimit-Reset-Requests", "3s")
			tr.learnBudget(&r, h, at, "")
			r.commit(verdict{st: status.Success, at: at})
			k.release()
			want := t0.Add(tc.from + 3*time.Second)
			if _, _, reset := k.budget.view(at); !reset.Equal(want) {
				t.Errorf("reset %v after the send, want %v", reset.Sub(t0), want.Sub(t0))
			}
		})
	}
}
