package redisstate_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

func TestNewOptions(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	s, err := redisstate.New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	if s.Prefix() != "apipool" || s.Channel() != "{apipool}:changes" {
		t.Errorf("defaults: prefix %q, channel %q", s.Prefix(), s.Channel())
	}
	if st := s.Stats(); st != (redisstate.Stats{}) {
		t.Errorf("fresh stats %+v", st)
	}
	s, err = redisstate.New(rdb, redisstate.WithPrefix("svc:prod"), redisstate.WithTimeout(0))
	if err != nil || s.Channel() != "{svc:prod}:changes" {
		t.Errorf("WithPrefix: %v, channel %q", err, s.Channel())
	}
	for name, opts := range map[string][]redisstate.Option{
		"empty prefix":   {redisstate.WithPrefix("")},
		"open brace":     {redisstate.WithPrefix("a{b")},
		"close brace":    {redisstate.WithPrefix("a}")},
		"long prefix":    {redisstate.WithPrefix(strings.Repeat("p", 129))},
		"negative wait":  {redisstate.WithTimeout(-time.Second)},
		"zero interval":  {redisstate.WithCheckInterval(0)},
		"later bad wins": {redisstate.WithPrefix("ok"), redisstate.WithPrefix("")},
		"nil clock":      {redisstate.WithClock(nil)},
		"nil option":     {redisstate.WithTimeout(0), nil},
	} {
		_, err := redisstate.New(rdb, opts...)
		var ce *apipool.ConfigError
		if !errors.Is(err, apipool.ErrInvalidConfig) || !errors.As(err, &ce) || !strings.HasPrefix(ce.Field, "redisstate.") {
			t.Errorf("%s: got %v, want a *ConfigError naming a redisstate option", name, err)
		}
		if errors.Is(err, redisstate.ErrInvalid) {
			t.Errorf("%s: %v matches ErrInvalid, which is for calls' arguments", name, err)
		}
	}
	if _, err := redisstate.New(nil); !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Errorf("nil client: got %v", err)
	}
}

// TestPublishInvalid: changes no retry can publish are refused before any
// round trip (the client's server does not exist) and are not counted as
// Redis errors.
func TestPublishInvalid(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	s, _ := redisstate.New(rdb)
	for name, c := range map[string]sharedstate.Change{
		"empty id":        {Kind: sharedstate.Enable},
		"bad utf-8 id":    {KeyID: "k\xff", Kind: sharedstate.Enable},
		"long id":         {KeyID: strings.Repeat("k", 2000), Kind: sharedstate.Enable},
		"no kind":         {KeyID: "k"},
		"unknown kind":    {KeyID: "k", Kind: 99},
		"no deadline":     {KeyID: "k", Kind: sharedstate.Cooldown},
		"before epoch":    {KeyID: "k", Kind: sharedstate.Cooldown, Until: time.Unix(-10, 0)},
		"after year 9999": {KeyID: "k", Kind: sharedstate.Cooldown, Until: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if err := s.Publish(context.Background(), c); !errors.Is(err, redisstate.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	if st := s.Stats(); st.Errors != 0 {
		t.Errorf("invalid changes counted as errors: %+v", st)
	}
}

func TestCooldownLaterWins(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ps := subscribe(t, a.rdb, a.Store)
	ctx := ctxT(t)
	base := time.Now().Add(time.Hour).Truncate(time.Second)
	for _, until := range []time.Time{
		base.Add(2 * time.Second),
		base.Add(1 * time.Second),   // earlier: ignored
		base.Add(2 * time.Second),   // the same: ignored
		base.Add(3*time.Second + 1), // later, rounded up to the next ms
	} {
		if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Cooldown, Until: until}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.rdb.HGet(ctx, "{"+a.Prefix()+"}:cooldown", "k1").Result()
	if want := strconv.FormatInt(base.Add(3*time.Second+time.Millisecond).UnixMilli(), 10); err != nil || got != want {
		t.Errorf("held deadline %q (%v), want %q", got, err, want)
	}
	msgs := received(t, a.rdb, ps, a.Store)
	if len(msgs) != 2 {
		t.Fatalf("published %d messages, want 2 (only when the deadline moved): %q", len(msgs), msgs)
	}
	var m struct {
		Kind  string `json:"kind"`
		Key   string `json:"key"`
		Until int64  `json:"until"`
		At    int64  `json:"at"`
	}
	if err := json.Unmarshal([]byte(msgs[1]), &m); err != nil {
		t.Fatal(err)
	}
	if m.Kind != "cooldown" || m.Key != "k1" || m.Until != base.Add(3*time.Second+time.Millisecond).UnixMilli() || m.At == 0 {
		t.Errorf("message %s", msgs[1])
	}
}

// TestCooldownLaterWinsConcurrent: replicas publishing cooldowns of one key
// at once leave the latest deadline, and the messages, published only when
// the deadline moved, carry rising deadlines ending with it.
func TestCooldownLaterWinsConcurrent(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	const replicas, goroutines, each = 3, 4, 50
	stores := make([]replica, replicas)
	for i := range stores {
		stores[i] = newReplica(t, srv, prefix)
	}
	ps := subscribe(t, stores[0].rdb, stores[0].Store)
	base := time.Now().Add(time.Hour).UnixMilli()
	var wg sync.WaitGroup
	var maxMu sync.Mutex
	var maxUntil int64
	errs := make(chan error, replicas*goroutines)
	for i := range replicas * goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range each {
				u := base + r.Int64N(100_000)
				maxMu.Lock()
				maxUntil = max(maxUntil, u)
				maxMu.Unlock()
				c := sharedstate.Change{KeyID: "k", Kind: sharedstate.Cooldown, Until: time.UnixMilli(u)}
				if err := stores[i%replicas].Publish(context.Background(), c); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := stores[1].rdb.HGet(context.Background(), "{"+prefix+"}:cooldown", "k").Int64()
	if err != nil || got != maxUntil {
		t.Errorf("held deadline %d (%v), want the latest %d", got, err, maxUntil)
	}
	msgs := received(t, stores[0].rdb, ps, stores[0].Store)
	var last int64
	for _, p := range msgs {
		var m struct{ Until int64 }
		if err := json.Unmarshal([]byte(p), &m); err != nil {
			t.Fatal(err)
		}
		if m.Until <= last {
			t.Fatalf("message deadlines not rising: %d after %d", m.Until, last)
		}
		last = m.Until
	}
	if last != maxUntil {
		t.Errorf("last message's deadline %d, want %d", last, maxUntil)
	}
	t.Logf("%d publishes, %d messages", replicas*goroutines*each, len(msgs))
}

func TestDisableEnable(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	b := newReplica(t, srv, a.Prefix())
	ps := subscribe(t, a.rdb, a.Store)
	ctx := ctxT(t)
	at := time.UnixMilli(1_767_225_600_000)
	disabled := "{" + a.Prefix() + "}:disabled"
	cooldown := "{" + a.Prefix() + "}:cooldown"

	if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Disable, Reason: "401 Unauthorized", At: at}); err != nil {
		t.Fatal(err)
	}
	// Already disabled: the first reason stays, nothing is published.
	if err := b.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Disable, Reason: "403 Forbidden"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Cooldown, Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	v, err := a.rdb.HGet(ctx, disabled, "k1").Result()
	if err != nil || v != `{"reason":"401 Unauthorized","at":1767225600000}` {
		t.Errorf("disabled entry %q (%v)", v, err)
	}
	if err := b.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Enable}); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.rdb.HExists(ctx, disabled, "k1").Result(); n {
		t.Error("still disabled after enable")
	}
	if n, _ := a.rdb.HExists(ctx, cooldown, "k1").Result(); n {
		t.Error("still cooling after enable")
	}
	// Enabling an enabled key publishes all the same.
	if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Enable}); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, p := range received(t, a.rdb, ps, a.Store) {
		var m struct{ Kind, Reason string }
		json.Unmarshal([]byte(p), &m)
		kinds = append(kinds, m.Kind+":"+m.Reason)
	}
	if got, want := strings.Join(kinds, " "), "disable:401 Unauthorized cooldown: enable: enable:"; got != want {
		t.Errorf("published %q, want %q", got, want)
	}
}
