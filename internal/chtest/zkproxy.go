package chtest

import (
	"bytes"
	be "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ZKProxy is a TCP proxy between a cluster's replicas and ZooKeeper that
// reads ZooKeeper's framing, for tests of a ZooKeeper connection lost at
// a chosen request: the multi request (one transaction of several
// operations) with which a replica commits an inserted part. Until armed
// (see [ZKProxy.ArmMulti]) it passes everything on. Its methods are safe
// for concurrent use.
type ZKProxy struct {
	// Addr is where the replicas connect: "127.0.0.1:port"; Host and
	// Port are its parts.
	Addr string
	Host string
	Port int

	target string
	ln     net.Listener

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	fault ZKFault
	match [][]byte
	hits  atomic.Int64
	wg    sync.WaitGroup
}

// ZKFault is what the proxy does to the multi request it is armed for.
type ZKFault int

const (
	// ZKDropMulti breaks the connection instead of passing the request
	// on: ZooKeeper never applies it, and the replica sees the
	// connection lost while committing.
	ZKDropMulti ZKFault = iota + 1
	// ZKLoseMultiAnswer passes the request on, waits until ZooKeeper has
	// answered it (so it is applied), and breaks the connection instead
	// of passing the answer on.
	ZKLoseMultiAnswer
)

// zkMulti is the type of a multi request in ZooKeeper's protocol.
const zkMulti = 14

// StartZKProxy starts a proxy to the ZooKeeper at target on a free
// loopback port. Close stops it.
func StartZKProxy(target string) (*ZKProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chtest: zookeeper proxy: %w", err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p := &ZKProxy{Addr: ln.Addr().String(), Host: host, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.Port, _ = strconv.Atoi(port)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// ArmMulti makes the proxy apply fault to the next multi request whose
// bytes contain each of match; 0 disarms it. The fault applies once.
// [CommitMatch] returns what names the commit of a part inserted into a
// table.
func (p *ZKProxy) ArmMulti(fault ZKFault, match ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.match = fault, nil
	for _, m := range match {
		p.match = append(p.match, []byte(m))
	}
}

// CommitMatch returns the strings that name, for [ZKProxy.ArmMulti], the
// transaction with which replica commits a part inserted into the
// replicated table at zkPath (its ZooKeeper path): it adds the part to
// the replica's parts and the block's hash to the table's blocks. The
// transaction that allocates the block's number names the blocks alone,
// and a merge's the parts alone.
func CommitMatch(zkPath, replica string) []string {
	return []string{zkPath + "/blocks/", zkPath + "/replicas/" + replica + "/parts/"}
}

// Hits returns how many requests the proxy has applied a fault to.
func (p *ZKProxy) Hits() int64 { return p.hits.Load() }

// take returns the armed fault if req, a request's body, is a multi
// request that it matches, and disarms it.
func (p *ZKProxy) take(req []byte) ZKFault {
	if len(req) < 8 || int32(be.BigEndian.Uint32(req[4:])) != zkMulti {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault == 0 {
		return 0
	}
	for _, m := range p.match {
		if !bytes.Contains(req, m) {
			return 0
		}
	}
	f := p.fault
	p.fault = 0
	return f
}

// readFrame reads one length-prefixed frame, and returns it whole.
func readFrame(r io.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := be.BigEndian.Uint32(head[:])
	if n > 64<<20 {
		return nil, errors.New("chtest: zookeeper proxy: frame too long")
	}
	b := make([]byte, 4+n)
	copy(b, head[:])
	_, err := io.ReadFull(r, b[4:])
	return b, err
}

func (p *ZKProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		// A connection losing an answer stops passing answers on
		// (mute), and is told when ZooKeeper answered request xid.
		var mute atomic.Bool
		var wantXid atomic.Int64
		answered := make(chan struct{}, 1)
		p.wg.Add(2)
		go func() { // the replica's requests
			defer p.wg.Done()
			defer p.forget(c, s)
			for first := true; ; first = false {
				req, err := readFrame(c)
				if err != nil {
					return
				}
				// The first frame is the session's handshake.
				fault := ZKFault(0)
				if !first {
					fault = p.take(req[4:])
				}
				switch fault {
				case ZKDropMulti:
					p.hits.Add(1)
					return // forget breaks both connections
				case ZKLoseMultiAnswer:
					wantXid.Store(int64(int32(be.BigEndian.Uint32(req[4:]))))
					mute.Store(true)
				}
				if _, err := s.Write(req); err != nil {
					return
				}
				if fault == ZKLoseMultiAnswer {
					select {
					case <-answered:
					case <-time.After(10 * time.Second):
					}
					p.hits.Add(1)
					return
				}
			}
		}()
		go func() { // ZooKeeper's answers and watch events
			defer p.wg.Done()
			defer p.forget(c, s)
			for {
				ans, err := readFrame(s)
				if err != nil {
					return
				}
				if mute.Load() {
					if len(ans) >= 8 && int64(int32(be.BigEndian.Uint32(ans[4:]))) == wantXid.Load() {
						select {
						case answered <- struct{}{}:
						default:
						}
					}
					continue
				}
				if _, err := c.Write(ans); err != nil {
					return
				}
			}
		}()
	}
}

// forget closes a connection pair.
func (p *ZKProxy) forget(c, s net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
	c.Close()
	s.Close()
}

// Close stops the proxy and breaks its connections.
func (p *ZKProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}
