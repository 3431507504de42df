package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client speaks tincan's HTTP API like a browser would: POST to send, an
// event stream or a long-poll to receive.
type client struct {
	base     string
	hc       *http.Client
	c        *counters
	wait     time.Duration // long-poll wait
	ackEvery time.Duration // SSE: how often a receiver acknowledges, as tincan.js does; 0 = never
}

// newClient makes a client whose transport keeps enough connections for
// conns concurrent requests (streams and posts) to one host.
func newClient(base string, conns int, c *counters) *client {
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
	return &client{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: tr}, c: c, wait: 25 * time.Second}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// peer is one member of a room.
type peer struct {
	room, id, token string
	initiator       bool
	auth            string // "Bearer <token>"
}

// apiError is a non-2xx answer.
type apiError struct {
	op     string
	status int
	code   string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s: %d %s", e.op, e.status, e.code) }

// kind is the error's label in the error counts: short, without ids.
func kind(op string, err error) string {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return op + ": timeout"
	case errors.Is(err, context.Canceled):
		return op + ": canceled"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:] // "Post \"http://…\": dial tcp …: connection refused" -> "connection refused"
	}
	return op + ": " + msg
}

func (c *client) do(ctx context.Context, op, method, path, auth, idemKey string, body []byte, want ...int) ([]byte, int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, 0, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, resp.StatusCode, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return out, resp.StatusCode, nil
		}
	}
	var p struct {
		Code string `json:"code"`
	}
	json.Unmarshal(out, &p)
	return out, resp.StatusCode, &apiError{op: op, status: resp.StatusCode, code: p.Code}
}

// join takes a new seat in room.
func (c *client) join(ctx context.Context, room string) (*peer, error) {
	return c.joinAuth(ctx, room, "")
}

// joinAuth is join with an Authorization header (auth: "Bearer <JWT>" for
// -auth jwt; "" for none).
func (c *client) joinAuth(ctx context.Context, room, auth string) (*peer, error) {
	out, _, err := c.do(ctx, "join", "POST", "/rooms/"+room+"/join", auth, "", nil, 201)
	if err != nil {
		return nil, err
	}
	var a struct {
		ClientID  string `json:"client_id"`
		Token     string `json:"token"`
		Initiator bool   `json:"initiator"`
	}
	if err := json.Unmarshal(out, &a); err != nil || a.Token == "" {
		return nil, fmt.Errorf("join: bad answer %.100q", out)
	}
	return &peer{room: room, id: a.ClientID, token: a.Token, initiator: a.Initiator, auth: "Bearer " + a.Token}, nil
}

// post sends a message and returns its id once the server committed it.
// A non-empty key is sent as its Idempotency-Key, as tincan.js does.
func (c *client) post(ctx context.Context, p *peer, body []byte, key string) (uint64, error) {
	out, _, err := c.do(ctx, "post", "POST", "/rooms/"+p.room+"/messages", p.auth, key, body, 201)
	if err != nil {
		return 0, err
	}
	id, ok := jsonUint(out, `"id":`)
	if !ok {
		return 0, fmt.Errorf("post: bad answer %.100q", out)
	}
	return id, nil
}

// postBatch sends a batch (a JSON array of messages) and returns the
// number of ids the server answered once it committed them all.
func (c *client) postBatch(ctx context.Context, p *peer, body []byte, key string) (int, error) {
	out, _, err := c.do(ctx, "post", "POST", "/rooms/"+p.room+"/messages", p.auth, key, body, 201)
	if err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(out, []byte(`{"ids":[`)) {
		return 0, fmt.Errorf("batch post: bad answer %.100q", out)
	}
	return bytes.Count(out, []byte(",")) + 1, nil
}

func (c *client) leave(ctx context.Context, p *peer) error {
	_, _, err := c.do(ctx, "leave", "POST", "/rooms/"+p.room+"/leave", p.auth, "", nil, 204)
	return err
}

// message is one delivered message. data is only valid during the handler.
type message struct {
	id   uint64
	data []byte
	at   time.Time
}

// receiver reads one member's messages in the background (event stream or
// long-poll) and hands each to its handler, in order, from one goroutine.
type receiver struct {
	c         *client
	p         *peer
	transport string
	handle    func(message)
	cancel    context.CancelFunc
	ready     chan struct{} // closed once the stream is open (ready frame) / first poll answered
	readyOnce sync.Once
	done      chan struct{}
	closing   atomic.Bool   // the member is leaving: the end of the stream is expected
	last      uint64        // highest id received (the resume cursor)
	seen      atomic.Uint64 // last, for the acknowledging goroutine
	err       error         // why it ended, when not asked to
}

// maxReconnects bounds how often one receiver reopens a broken stream.
const maxReconnects = 5

func (c *client) receive(ctx context.Context, p *peer, transport string, handle func(message)) *receiver {
	ctx, cancel := context.WithCancel(ctx)
	r := &receiver{c: c, p: p, transport: transport, handle: handle, cancel: cancel,
		ready: make(chan struct{}), done: make(chan struct{})}
	var acking sync.WaitGroup
	if transport == "sse" && c.ackEvery > 0 {
		acking.Add(1)
		go func() {
			defer acking.Done()
			r.acknowledge(ctx)
		}()
	}
	go func() {
		defer close(r.done)
		defer acking.Wait()
		defer cancel()
		for attempt := 0; ; attempt++ {
			var err error
			if transport == "poll" {
				err = r.poll(ctx)
			} else {
				err = r.stream(ctx)
			}
			if ctx.Err() != nil || r.closing.Load() {
				return
			}
			var ae *apiError
			if attempt >= maxReconnects || errors.As(err, &ae) && ae.status < 500 {
				r.err = err
				c.c.fail(kind(transport, err))
				return
			}
			c.c.reconnects.Add(1)
			select {
			case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}()
	return r
}

func (r *receiver) setReady() { r.readyOnce.Do(func() { close(r.ready) }) }

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

// deliver checks the order of ids and hands the message on.
func (r *receiver) deliver(id uint64, data []byte, at time.Time) {
	if id <= r.last {
		if id == r.last {
			r.c.c.dups.Add(1)
		} else {
			r.c.c.order.Add(1)
		}
		return
	}
	r.last = id
	r.seen.Store(id)
	r.handle(message{id: id, data: data, at: at})
}

// acknowledge tells the server, every ackEvery, the last id the stream
// delivered, with a long-poll that does not wait, as tincan.js does: an open
// stream acknowledges nothing by itself, so nothing it delivered could be
// pruned. The answer is not read: the stream delivers the same messages.
func (r *receiver) acknowledge(ctx context.Context) {
	t := time.NewTicker(r.c.ackEvery)
	defer t.Stop()
	var acked uint64
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		upto := r.seen.Load()
		if upto <= acked {
			continue
		}
		path := "/rooms/" + r.p.room + "/messages?since=" + strconv.FormatUint(upto, 10) + "&wait=0"
		if _, _, err := r.c.do(ctx, "ack", "GET", path, r.p.auth, "", nil, 200); err == nil {
			acked = upto
			r.c.c.acks.Add(1)
		}
	}
}

// stream reads the event stream until it ends.
func (r *receiver) stream(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "GET", r.c.base+"/rooms/"+r.p.room+"/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", r.p.auth)
	req.Header.Set("Accept", "text/event-stream")
	if r.last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(r.last, 10))
	}
	resp, err := r.c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return &apiError{op: "events", status: resp.StatusCode}
	}
	r.c.c.streams.Add(1)
	defer r.c.c.streams.Add(-1)
	sr := newSSEReader(resp.Body)
	var f frame
	for {
		if err := sr.next(&f); err != nil {
			if err == io.EOF && !r.closing.Load() {
				return io.ErrUnexpectedEOF // the server ended a stream it should have kept
			}
			return err
		}
		switch {
		case f.comment && len(f.data) == 0 && !f.hasData:
			r.c.c.heartbeats.Add(1)
		case string(f.event) == "ready":
			r.setReady()
		case len(f.event) > 0:
			// unknown event: ignore, as the contract asks
		case f.hasData:
			id, err := strconv.ParseUint(string(f.id), 10, 64)
			if err != nil {
				r.c.c.fail("events: frame without a numeric id")
				continue
			}
			r.deliver(id, f.data, time.Now())
		}
	}
}

// poll long-polls until the context ends or the member is gone.
func (r *receiver) poll(ctx context.Context) error {
	var answer struct {
		Messages []json.RawMessage `json:"messages"`
		Next     uint64            `json:"next"`
	}
	for first := true; ; first = false {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := "0"
		if !first {
			wait = strconv.FormatFloat(r.c.wait.Seconds(), 'f', -1, 64)
		}
		path := "/rooms/" + r.p.room + "/messages?since=" + strconv.FormatUint(r.last, 10) + "&wait=" + wait
		out, _, err := r.c.do(ctx, "poll", "GET", path, r.p.auth, "", nil, 200)
		if err != nil {
			return err
		}
		at := time.Now()
		answer.Messages = answer.Messages[:0]
		if err := json.Unmarshal(out, &answer); err != nil {
			return fmt.Errorf("poll: bad answer: %w", err)
		}
		r.setReady()
		for _, m := range answer.Messages {
			id, ok := jsonUint(m, `"id":`)
			if !ok {
				r.c.c.fail("poll: message without id")
				continue
			}
			r.deliver(id, m, at)
		}
		if answer.Next > r.last {
			r.last = answer.Next
		}
	}
}

// frame is one SSE frame. Its slices are valid until the next call of next.
type frame struct {
	id      []byte
	event   []byte
	data    []byte
	hasData bool
	comment bool
}

// sseReader parses text/event-stream: lines "field: value", frames ended by
// a blank line, comments starting with ':'.
type sseReader struct {
	br   *bufio.Reader
	long []byte // a line longer than the buffer
	id   []byte
}

func newSSEReader(r io.Reader) *sseReader { return &sseReader{br: bufio.NewReaderSize(r, 32<<10)} }

func (s *sseReader) line() ([]byte, error) {
	l, err := s.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		s.long = append(s.long[:0], l...)
		for err == bufio.ErrBufferFull {
			if len(s.long) > 4<<20 {
				return nil, errors.New("sse: line longer than 4 MiB")
			}
			l, err = s.br.ReadSlice('\n')
			s.long = append(s.long, l...)
		}
		l = s.long
	}
	if err != nil {
		if err == io.EOF && len(l) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

// next reads up to the next frame that carries something: data, an event
// name or a comment.
func (s *sseReader) next(f *frame) error {
	f.id, f.event, f.data, f.hasData, f.comment = nil, f.event[:0], f.data[:0], false, false
	for {
		l, err := s.line()
		if err != nil {
			return err
		}
		if len(l) == 0 {
			if f.hasData || f.comment || len(f.event) > 0 {
				f.id = s.id
				return nil
			}
			continue
		}
		if l[0] == ':' {
			f.comment = true
			continue
		}
		name, value, _ := bytes.Cut(l, []byte{':'})
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(name) {
		case "data":
			if f.hasData {
				f.data = append(f.data, '\n')
			}
			f.data = append(f.data, value...)
			f.hasData = true
		case "id":
			s.id = append(s.id[:0], value...)
		case "event":
			f.event = append(f.event[:0], value...)
		}
	}
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
