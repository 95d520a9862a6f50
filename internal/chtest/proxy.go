package chtest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy in front of a server, for tests of answers that
// never arrive: with [Proxy.SwallowAnswersAfter], a connection that has
// carried enough bytes to the server (an INSERT's data) stops passing the
// server's answers on, so that the server commits an insert whose client
// never hears of it; [Proxy.Cut] then breaks the connections. Its methods
// are safe for concurrent use.
type Proxy struct {
	// Addr is where clients connect: "127.0.0.1:port".
	Addr string

	target string
	ln     net.Listener
	// swallowAfter, when positive, is the number of bytes a connection
	// carries to the server after which its answers are dropped.
	swallowAfter atomic.Int64
	swallowed    atomic.Int64 // connections whose answers were dropped

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to target on a free loopback port and stops it
// when t ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("chtest: proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		var sent atomic.Int64
		var counted atomic.Bool
		p.wg.Add(2)
		go func() { // client to server
			defer p.wg.Done()
			defer p.forget(c, s)
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					sent.Add(int64(n))
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // server to client
			defer p.wg.Done()
			defer p.forget(c, s)
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					if lim := p.swallowAfter.Load(); lim > 0 && sent.Load() >= lim {
						if counted.CompareAndSwap(false, true) {
							p.swallowed.Add(1)
						}
						continue // the client never hears it
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// forget closes a connection pair.
func (p *Proxy) forget(c, s net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
	c.Close()
	s.Close()
}

// SwallowAnswersAfter makes every connection that has carried at least n
// bytes to the server drop the server's answers from then on (0: pass
// everything on again, for connections made afterwards too).
func (p *Proxy) SwallowAnswersAfter(n int64) { p.swallowAfter.Store(n) }

// Swallowed returns how many connections have had answers dropped.
func (p *Proxy) Swallowed() int64 { return p.swallowed.Load() }

// Cut closes every open connection through the proxy; the client sees
// them break. New connections are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *Proxy) close() {
	if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return
	}
	p.Cut()
	p.wg.Wait()
}
