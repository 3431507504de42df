package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Transport is how a member receives.
type Transport int

const (
	// Auto receives over Server-Sent Events and falls back to long-poll
	// for the rest of the Receive when the stream does not work: no ready
	// frame within ReadyTimeout of its opening (a buffering proxy), or a
	// stream that ends twice in a row before its ready frame.
	Auto Transport = iota
	// EventStream receives over Server-Sent Events only.
	EventStream
	// LongPoll receives by long-poll only.
	LongPoll
)

func (t Transport) String() string {
	switch t {
	case EventStream:
		return "sse"
	case LongPoll:
		return "poll"
	}
	return "auto"
}

// Message is one message delivered to the member: another member's post
// ("from" its client_id), or a server event such as peer-joined (no
// "from").
type Message struct {
	// ID is the message's id, increasing within the room.
	ID uint64
	// Data is the message as delivered: a JSON object with "id" first.
	// It is the caller's to keep.
	Data json.RawMessage
}

// Type returns the message's "type" ("offer", "peer-joined", your own),
// or "" when Data has none.
func (m Message) Type() string { return m.header().Type }

// From returns the sender's client_id, "server" for the admin API's
// messages, and "" for the server's own events.
func (m Message) From() string { return m.header().From }

func (m Message) header() (h struct{ Type, From string }) {
	json.Unmarshal(m.Data, &h)
	return h
}

// Decode unmarshals Data into v.
func (m Message) Decode(v any) error { return json.Unmarshal(m.Data, v) }

// ReceiveOptions say how to receive; the zero value (or nil) receives over
// SSE with long-poll fallback, from what the member has not acknowledged.
type ReceiveOptions struct {
	Transport Transport
	// Since is the cursor to start after: the last id already held.
	// Zero replays every retained message addressed to the member (the
	// server never sends again what was acknowledged).
	Since uint64
	// Wait is how long a long-poll waits (default 25 s, at most 60 s).
	Wait time.Duration
	// ReadyTimeout is how long Auto waits for an event stream's ready
	// frame before it falls back (default 5 s).
	ReadyTimeout time.Duration
	// AckEvery is how often, on an event stream, what arrived is
	// acknowledged (with a long-poll that does not wait) so that the
	// server can prune it: default 30 s; negative: never.
	AckEvery time.Duration
	// Hooks, for monitoring; each is called from Receive's goroutines and
	// must return quickly.
	Hooks Hooks
}

// Hooks are what a Receive reports besides messages. Nil ones are skipped.
type Hooks struct {
	// OnConnect: a stream delivered its ready frame (cursor: where it
	// starts), or a long-poll loop got its first answer.
	OnConnect func(t Transport, cursor uint64)
	// OnDisconnect: a stream or long-poll loop ended; err is why (nil when
	// the Receive ends). Receive reconnects after a non-nil err unless it
	// is final.
	OnDisconnect func(t Transport, err error)
	// OnHeartbeat: a comment (keepalive) arrived on the stream.
	OnHeartbeat func()
	// OnStale: a message with an id not above the cursor arrived again
	// and was dropped (equal: a duplicate; below: out of order). tincan
	// promises neither happens.
	OnStale func(id, cursor uint64)
	// OnAck: the server was told that everything up to upto arrived.
	OnAck func(upto uint64)
}

// Receive delivers the member's messages in id order, each once, until ctx
// is done (the sequence then ends without an error), the member leaves
// (likewise), or a final error, which is the sequence's last element:
// ErrUnauthorized (the member was removed, as for silence), ErrKicked,
// ErrRoomClosed, ErrNotMember. Everything else (a broken connection, a
// server restart, 5xx from a proxy, 429) is waited out and the stream or
// poll resumed from the last delivered id, so nothing is lost or repeated.
//
// Iterate it once, from one goroutine; stopping the loop stops receiving.
func (m *Member) Receive(ctx context.Context, opts *ReceiveOptions) iter.Seq2[Message, error] {
	var o ReceiveOptions
	if opts != nil {
		o = *opts
	}
	if o.Wait <= 0 {
		o.Wait = 25 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Second
	}
	if o.AckEvery == 0 {
		o.AckEvery = 30 * time.Second
	}
	return func(yield func(Message, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		r := &receiver{m: m, o: o, yield: yield}
		r.cursor.Store(o.Since)
		var acks sync.WaitGroup
		defer func() { cancel(); acks.Wait() }()
		if o.Transport != LongPoll && o.AckEvery > 0 {
			acks.Add(1)
			go func() { defer acks.Done(); r.acknowledge(ctx) }()
		}
		r.run(ctx)
	}
}

// receiver is the state of one Receive.
type receiver struct {
	m       *Member
	o       ReceiveOptions
	yield   func(Message, error) bool
	cursor  atomic.Uint64 // the last id delivered
	stopped bool          // yield returned false
}

// errStopped ends a loop whose consumer stopped iterating.
var errStopped = errors.New("tincan: the caller stopped receiving")

// run receives until the end, reconnecting after what can be waited out.
func (r *receiver) run(ctx context.Context) {
	transport := r.o.Transport
	if transport == Auto {
		transport = EventStream
	}
	failures, earlyEnds := 0, 0
	for {
		var err error
		var ready bool
		if transport == LongPoll {
			ready, err = r.poll(ctx)
		} else {
			ready, err = r.stream(ctx)
		}
		if r.o.Hooks.OnDisconnect != nil {
			r.o.Hooks.OnDisconnect(transport, err)
		}
		if r.stopped || ctx.Err() != nil {
			return
		}
		if r.m.left.Load() {
			return // the member left: its streams end and its token stops working
		}
		if final(err) {
			r.yield(Message{}, err)
			return
		}
		if ready {
			failures, earlyEnds = 0, 0
		} else {
			failures++
		}
		if r.o.Transport == Auto && transport == EventStream {
			switch {
			case errors.Is(err, errNotReady):
				transport = LongPoll
				continue
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				if !ready {
					if earlyEnds++; earlyEnds >= 2 {
						transport = LongPoll
						continue
					}
				}
			}
		}
		if err := sleep(ctx, r.m.c.pause(max(failures-1, 0), err)); err != nil {
			return
		}
	}
}

// final says whether err ends the Receive: a refusal that says the member
// or its room is gone, or the request is wrong.
func final(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status >= 400 && e.Status < 500 &&
		e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

// errNotReady is an event stream that sent no ready frame in time.
var errNotReady = errors.New("no ready frame in time (does a proxy buffer the stream?)")

// deliver hands one message to the caller unless it is stale; false: stop.
func (r *receiver) deliver(id uint64, data []byte) bool {
	last := r.cursor.Load()
	if id <= last {
		if r.o.Hooks.OnStale != nil {
			r.o.Hooks.OnStale(id, last)
		}
		return true
	}
	r.cursor.Store(id)
	if !r.yield(Message{ID: id, Data: bytes.Clone(data)}, nil) {
		r.stopped = true
		return false
	}
	return true
}

// farewell is the error of a last frame without id: the member was kicked
// or its room closed.
func farewell(data []byte) error {
	var f struct{ Type string }
	json.Unmarshal(data, &f)
	switch f.Type {
	case "kicked":
		return &Error{Op: "receive", Status: http.StatusUnauthorized, Code: "kicked", Index: -1, Detail: "the application removed this member"}
	case "room-closed":
		return &Error{Op: "receive", Status: http.StatusUnauthorized, Code: "room_closed", Index: -1, Detail: "the application closed the room"}
	}
	return nil
}

// stream reads the event stream until it ends; ready says whether its
// ready frame came.
func (r *receiver) stream(ctx context.Context) (ready bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var notReady atomic.Bool
	timer := time.AfterFunc(r.o.ReadyTimeout, func() {
		if r.o.Transport == Auto {
			notReady.Store(true)
			cancel()
		}
	})
	defer timer.Stop()
	resp, err := r.m.c.send(ctx, request{op: "receive", method: "GET", path: "/rooms/" + r.m.Room + "/events",
		bearer: r.m.Token, lastEventID: strconv.FormatUint(r.cursor.Load(), 10)}, http.StatusOK)
	if err != nil {
		if notReady.Load() {
			return false, errNotReady
		}
		return false, err
	}
	defer resp.Body.Close()
	er := NewEventReader(resp.Body)
	for {
		e, err := er.Next()
		if err != nil {
			if notReady.Load() {
				return ready, errNotReady
			}
			return ready, err
		}
		switch {
		case string(e.Name) == "ready":
			if !ready {
				ready = true
				timer.Stop()
				if r.o.Hooks.OnConnect != nil {
					r.o.Hooks.OnConnect(EventStream, r.cursor.Load())
				}
			}
		case len(e.Name) > 0:
			// an event this client does not know: ignored, as the contract asks
		case e.HasData && len(e.ID) == 0:
			if err := farewell(e.Data); err != nil {
				return ready, err
			}
		case e.HasData:
			id, err := strconv.ParseUint(string(e.ID), 10, 64)
			if err != nil {
				return ready, fmt.Errorf("tincan: receive: a frame with id %q", e.ID)
			}
			if !r.deliver(id, e.Data) {
				return ready, errStopped
			}
		case e.Comment:
			if r.o.Hooks.OnHeartbeat != nil {
				r.o.Hooks.OnHeartbeat()
			}
		}
	}
}

// pollAnswer is a long-poll's answer.
type pollAnswer struct {
	Messages []json.RawMessage `json:"messages"`
	Next     uint64            `json:"next"`
}

// poll long-polls until an error; ready says whether one was answered.
func (r *receiver) poll(ctx context.Context) (ready bool, err error) {
	wait := strconv.FormatFloat(r.o.Wait.Seconds(), 'f', -1, 64)
	var a pollAnswer
	for first := true; ; first = false {
		w := wait
		if first {
			w = "0" // at once: say that the loop works
		}
		a.Messages = a.Messages[:0]
		if err := r.pollOnce(ctx, w, &a); err != nil {
			return ready, err
		}
		if !ready {
			ready = true
			if r.o.Hooks.OnConnect != nil {
				r.o.Hooks.OnConnect(LongPoll, r.cursor.Load())
			}
		}
		for _, m := range a.Messages {
			id, ok := leadingID(m)
			if !ok {
				if err := farewell(m); err != nil {
					return ready, err
				}
				continue
			}
			if !r.deliver(id, m) {
				return ready, errStopped
			}
		}
		if a.Next > r.cursor.Load() {
			r.cursor.Store(a.Next)
		}
	}
}

// pollOnce is one long-poll from the cursor, answered into a.
func (r *receiver) pollOnce(ctx context.Context, wait string, a *pollAnswer) error {
	resp, err := r.m.c.send(ctx, request{op: "receive", method: "GET",
		path:   "/rooms/" + r.m.Room + "/messages?since=" + strconv.FormatUint(r.cursor.Load(), 10) + "&wait=" + wait,
		bearer: r.m.Token}, http.StatusOK)
	if err != nil {
		return err
	}
	if err := decodeAnswer(resp, a); err != nil {
		return fmt.Errorf("tincan: receive: long-poll answer: %w", err)
	}
	return nil
}

// acknowledge tells the server, every AckEvery, the last id delivered,
// with a long-poll that does not wait: an open stream acknowledges
// nothing by itself. Its answer is not delivered: the stream carries the
// same messages.
func (r *receiver) acknowledge(ctx context.Context) {
	t := time.NewTicker(r.o.AckEvery)
	defer t.Stop()
	var acked uint64
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		upto := r.cursor.Load()
		if upto <= acked {
			continue
		}
		_, err := r.m.c.call(ctx, request{op: "receive", method: "GET", bearer: r.m.Token,
			path: "/rooms/" + r.m.Room + "/messages?since=" + strconv.FormatUint(upto, 10) + "&wait=0"},
			func(error) bool { return false }, nil, http.StatusOK)
		if err == nil {
			acked = upto
			if r.o.Hooks.OnAck != nil {
				r.o.Hooks.OnAck(upto)
			}
		}
	}
}

// leadingID reads the id of a delivered message, which the server writes
// first ({"id":17,…}); a message without one is a farewell.
func leadingID(m []byte) (uint64, bool) {
	const prefix = `{"id":`
	if !bytes.HasPrefix(m, []byte(prefix)) {
		var h struct{ ID *uint64 }
		if json.Unmarshal(m, &h) != nil || h.ID == nil {
			return 0, false
		}
		return *h.ID, true
	}
	var n uint64
	i := len(prefix)
	for ; i < len(m) && i < len(prefix)+20 && '0' <= m[i] && m[i] <= '9'; i++ {
		n = n*10 + uint64(m[i]-'0')
	}
	return n, i > len(prefix)
}
