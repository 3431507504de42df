package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tincan/tincan/client"
)

// The bench speaks tincan's public API through the Go client package
// (github.com/tincan/tincan/client), as an application would: Join, Send,
// SendBatch, Receive and Leave. What stays here is what the measurements
// need: the tuned transport, counting (hooks), the receive time of each
// message, and reading the bench's own fields from a delivered message.

// newHTTPClient is an HTTP client whose transport keeps enough connections
// for conns concurrent requests (streams and posts) to one host.
func newHTTPClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil, // the bench talks to the server directly
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     8 << 10,
		ReadBufferSize:      8 << 10,
	}
	return &http.Client{Transport: tr}
}

// newClient is the tincan client of the run: one try per call, since the
// bench counts errors rather than hiding them (the first pause, 50 ms, is
// only the pause before a broken stream or poll is reopened).
func newClient(base string, hc *http.Client) (*client.Client, error) {
	return client.New(base, client.WithHTTPClient(hc), client.WithRetries(1, 50*time.Millisecond))
}

// kind is the error's label in the error counts: short, without ids.
func kind(op string, err error) string {
	var ae *client.Error
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("%s: %d %s", op, ae.Status, ae.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return op + ": timeout"
	case errors.Is(err, context.Canceled):
		return op + ": canceled"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:] // "tincan: send: Post \"http://…\": dial tcp …: connection refused" -> "connection refused"
	}
	return op + ": " + msg
}

// message is one delivered message, stamped when Receive handed it over.
type message struct {
	id   uint64
	data []byte
	at   time.Time
}

// receiver runs a member's Receive in the background and hands each
// message to its handler, in order, from one goroutine.
type receiver struct {
	transport string
	cancel    context.CancelFunc
	ready     chan struct{} // closed once the stream is open (ready frame) / first poll answered
	readyOnce sync.Once
	done      chan struct{}
	closing   atomic.Bool // the member is leaving: the end of the stream is expected
	err       error       // why it ended, when not asked to
}

// maxReconnects bounds how often one receiver reopens a broken stream (or
// poll) in a row before it counts an error and gives up.
const maxReconnects = 5

func (b *bench) receive(ctx context.Context, m *client.Member, transport string, handle func(message)) *receiver {
	ctx, cancel := context.WithCancel(ctx)
	r := &receiver{transport: transport, cancel: cancel, ready: make(chan struct{}), done: make(chan struct{})}
	c := b.c
	t := client.EventStream
	if transport == "poll" {
		t = client.LongPoll
	}
	ackEvery := b.cfg.ackEvery
	if ackEvery == 0 {
		ackEvery = -1 // never
	}
	var open bool  // an event stream is open (counted in c.streams)
	var broken int // ends in a row without a connect in between
	opts := &client.ReceiveOptions{Transport: t, Wait: b.cfg.pollWait, AckEvery: ackEvery, Hooks: client.Hooks{
		OnConnect: func(t client.Transport, _ uint64) {
			broken = 0
			if t == client.EventStream && !open {
				open = true
				c.streams.Add(1)
			}
			r.readyOnce.Do(func() { close(r.ready) })
		},
		OnDisconnect: func(_ client.Transport, err error) {
			if open {
				open = false
				c.streams.Add(-1)
			}
			if err == nil || r.closing.Load() || ctx.Err() != nil {
				return
			}
			if broken++; broken > maxReconnects {
				r.err = err
				c.fail(kind(transport, err))
				cancel()
				return
			}
			c.reconnects.Add(1)
		},
		OnHeartbeat: func() { c.heartbeats.Add(1) },
		OnStale: func(id, cursor uint64) {
			if id == cursor {
				c.dups.Add(1)
			} else {
				c.order.Add(1)
			}
		},
		OnAck: func(uint64) { c.acks.Add(1) },
	}}
	go func() {
		defer close(r.done)
		defer cancel()
		for msg, err := range m.Receive(ctx, opts) {
			if err != nil { // final: the member is gone
				if !r.closing.Load() && r.err == nil {
					r.err = err
					c.fail(kind(transport, err))
				}
				return
			}
			handle(message{id: msg.ID, data: msg.Data, at: time.Now()})
		}
	}()
	return r
}

// waitReady waits until the receiver is listening.
func (r *receiver) waitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.ready:
		return nil
	case <-r.done:
		if r.err != nil {
			return r.err
		}
		return errors.New("receiver ended before it was ready")
	case <-t.C:
		return fmt.Errorf("%s: not ready within %s", r.transport, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finish ends the receiver. After the member left, the server ends the
// stream (or answers the poll 401) by itself, which leaves the connection
// reusable; wait for that up to grace, then cut it.
func (r *receiver) finish(grace time.Duration) {
	r.closing.Store(true)
	if grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-r.done:
		case <-t.C:
		}
		t.Stop()
	}
	r.cancel()
	<-r.done
}

// jsonUint reads the unsigned integer after key (e.g. `"seq":`) in a JSON
// text the bench knows the shape of.
func jsonUint(b []byte, key string) (uint64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	var n uint64
	j := 0
	for ; j < len(b) && j < 20 && '0' <= b[j] && b[j] <= '9'; j++ {
		n = n*10 + uint64(b[j]-'0')
	}
	return n, j > 0
}

// jsonType reads the "type" string of a delivered message.
func jsonType(b []byte) string {
	const key = `"type":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return ""
	}
	b = b[i+len(key):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return ""
	}
	return string(b[:j])
}
