package quotasim

import (
	"context"
	"net"
	"sync"
)

// Pipes is an in-memory network to one server: the server accepts on it
// (it is a net.Listener) the connections that DialContext makes, each one
// a net.Pipe. In a synctest bubble, where a goroutine waiting on a socket
// would keep the bubble's time from moving, its waits are channel waits.
// Make it inside the bubble.
type Pipes struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewPipes returns an in-memory network with no connection yet.
func NewPipes() *Pipes {
	return &Pipes{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next connection, or the network's Close.
func (p *Pipes) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// Close ends Accept and DialContext; connections made stay open.
func (p *Pipes) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// Addr returns the listener's address, "pipe".
func (p *Pipes) Addr() net.Addr { return pipeAddr{} }

// DialContext returns the client's end of a new connection whose server
// end Accept returns; network and address are ignored.
func (p *Pipes) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case p.conns <- server:
		return client, nil
	case <-p.done:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
