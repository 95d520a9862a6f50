package redisstate_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// testPrefix returns a prefix of its own for t, so that tests sharing the
// server (and runs with -count) keep apart.
func testPrefix(t testing.TB) string {
	var b [4]byte
	rand.Read(b[:])
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	return name + "-" + hex.EncodeToString(b[:])
}

// replica is one Store with a client of its own, as one replica of a
// service has.
type replica struct {
	*redisstate.Store
	rdb *redis.Client
}

// newReplica returns a store on srv with a client of its own, closed when
// t ends.
func newReplica(t testing.TB, srv *redistest.Server, prefix string, opts ...redisstate.Option) replica {
	t.Helper()
	rdb := srv.Client(t)
	s, err := redisstate.New(rdb, append([]redisstate.Option{redisstate.WithPrefix(prefix)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return replica{s, rdb}
}

// watcher runs Watch and collects what it applies.
type watcher struct {
	numSub func() (int64, error)
	before int64 // subscribers to the channel before this Watch
	ch     chan sharedstate.Change
	cancel context.CancelFunc
	done   chan error
	lost   bool // the last Synced state said Redis lost its data
}

// startWatch starts r's Watch and returns once it has subscribed, so that
// every change published afterwards reaches it.
func startWatch(t testing.TB, r replica) *watcher {
	t.Helper()
	s := r.Store
	numSub := func() (int64, error) {
		n, err := r.rdb.PubSubNumSub(context.Background(), s.Channel()).Result()
		return n[s.Channel()], err
	}
	subs := func() int64 {
		n, err := numSub()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := subs()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{numSub: numSub, before: before, ch: make(chan sharedstate.Change, 1000), cancel: cancel, done: make(chan error, 1)}
	var calls sync.Mutex // apply must not be called concurrently
	go func() {
		w.done <- s.Watch(ctx, func(c sharedstate.Change) {
			if !calls.TryLock() {
				panic("apply called concurrently")
			}
			defer calls.Unlock()
			w.ch <- c
		})
	}()
	t.Cleanup(func() { w.stop() })
	deadline := time.Now().Add(5 * time.Second)
	for subs() <= before {
		select {
		case err := <-w.done:
			t.Fatalf("Watch returned %v", err)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("Watch did not subscribe within 5s")
		}
	}
	return w
}

// next returns the next change applied, failing t after a few seconds.
func (w *watcher) next(t testing.TB) sharedstate.Change {
	t.Helper()
	select {
	case c := <-w.ch:
		return c
	case err := <-w.done:
		w.done <- err
		t.Fatalf("Watch returned %v while a change was expected", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no change applied within 5s")
	}
	return sharedstate.Change{}
}

// state returns the state that Watch applies first, up to sharedstate.Synced.
func (w *watcher) state(t testing.TB) []sharedstate.Change {
	t.Helper()
	var out []sharedstate.Change
	for {
		c := w.next(t)
		if c.Kind == sharedstate.Synced {
			if c.KeyID != "" || c != (sharedstate.Change{Kind: sharedstate.Synced, Lost: c.Lost}) {
				t.Errorf("synced with fields: %+v", c)
			}
			w.lost = c.Lost
			return out
		}
		out = append(out, c)
	}
}

// stop cancels the Watch and returns what it returned, after Redis has
// dropped its subscription (for a while at most), so that the next
// startWatch counts subscribers right.
func (w *watcher) stop() error {
	w.cancel()
	err := <-w.done
	w.done <- err
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n, nerr := w.numSub(); nerr != nil || n <= w.before {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return err
}

// sync publishes a marker change through s and waits until w applies it,
// returning what w applied before it: everything published before the
// marker.
func (w *watcher) sync(t testing.TB, s *redisstate.Store) []sharedstate.Change {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	marker := "marker-" + hex.EncodeToString(b[:])
	if err := s.Publish(context.Background(), sharedstate.Change{KeyID: marker, Kind: sharedstate.Enable}); err != nil {
		t.Fatal(err)
	}
	var got []sharedstate.Change
	for {
		c := w.next(t)
		if c.KeyID == marker {
			return got
		}
		got = append(got, c)
	}
}

// subscribe returns a raw subscription to the store's channel, to see what
// is published, and waits until Redis confirms it.
func subscribe(t testing.TB, rdb *redis.Client, s *redisstate.Store) *redis.PubSub {
	t.Helper()
	ps := rdb.Subscribe(context.Background(), s.Channel())
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.ReceiveTimeout(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return ps
}

// received returns the payloads published on the store's channel since
// subscribe, up to a marker it publishes itself (so no fixed wait).
func received(t testing.TB, rdb *redis.Client, ps *redis.PubSub, s *redisstate.Store) []string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	marker := "marker-" + hex.EncodeToString(b[:])
	if err := rdb.Publish(context.Background(), s.Channel(), marker).Err(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		m, err := ps.ReceiveTimeout(context.Background(), 5*time.Second)
		if err != nil {
			t.Fatalf("receiving: %v", err)
		}
		if msg, ok := m.(*redis.Message); ok {
			if msg.Payload == marker {
				return out
			}
			out = append(out, msg.Payload)
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t testing.TB, opt *redis.Options) *redis.Client {
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// proxy forwards TCP connections to a server until hang, after which it
// forwards nothing more but keeps the connections open, as a network that
// drops packets would.
type proxy struct {
	addr string
	ln   net.Listener
	hung chan struct{}
	once sync.Once
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln, hung: make(chan struct{})}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, u)
			mu.Unlock()
			conns.Add(2)
			go p.pipe(&conns, c, u)
			go p.pipe(&conns, u, c)
		}
	}()
	return p
}

func (p *proxy) pipe(wg *sync.WaitGroup, dst, src net.Conn) {
	defer wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-p.hung:
			continue // swallow
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *proxy) hang() { p.once.Do(func() { close(p.hung) }) }
