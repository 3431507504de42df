package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Client reaches one tincan server (or a load balancer in front of
// several). It is safe for concurrent use; its zero value is not usable:
// make one with New.
type Client struct {
	base     string // without a trailing slash
	hc       *http.Client
	attempts int
	backoff  time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc (its
// transport, TLS configuration, proxy). hc's Timeout must be zero or
// longer than an event stream lives: bound calls with their contexts.
// The default is a client of its own with http.DefaultTransport's
// settings.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetries sets how many times a call is tried in all (at least 1;
// default 8) and the first pause between tries (default 250 ms, doubling
// up to 10 s, with jitter; a Retry-After of the server counts instead).
// Only what cannot happen twice is retried: a post carries an
// Idempotency-Key, a join is retried only after answers that say it did
// nothing (429, 503).
func WithRetries(attempts int, first time.Duration) Option {
	return func(c *Client) {
		c.attempts = max(attempts, 1)
		if first > 0 {
			c.backoff = first
		}
	}
}

// New returns a client of the server at baseURL ("https://signal.example.com",
// or with a path prefix when a proxy serves tincan under one).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tincan: base URL %q: want http:// or https:// and a host", baseURL)
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), attempts: 8, backoff: 250 * time.Millisecond}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return c, nil
}

// roomRE is the server's rule for room names.
var roomRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func checkRoom(room string) error {
	if !roomRE.MatchString(room) {
		return &Error{Op: "room", Code: "bad_room_name", Index: -1,
			Detail: fmt.Sprintf("room name %q: want 1 to 64 of A-Z a-z 0-9 _ -", room)}
	}
	return nil
}

// request is one HTTP call: its method, path (under the base URL), the
// Authorization credential, the body and an Idempotency-Key.
type request struct {
	op, method, path string
	bearer           string
	body             []byte // nil: no body
	idemKey          string
	lastEventID      string
}

// send makes one try of r and returns the answer when its status is one of
// want; any other is an *Error (the body read and closed).
func (c *Client) send(ctx context.Context, r request, want ...int) (*http.Response, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, body)
	if err != nil {
		return nil, err
	}
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.idemKey != "" {
		req.Header.Set("Idempotency-Key", r.idemKey)
	}
	if r.lastEventID != "" {
		req.Header.Set("Last-Event-ID", r.lastEventID)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tincan: %s: %w", r.op, err)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, problemOf(r.op, resp)
}

// call makes r until it is answered with one of want, retrying what
// again says may be retried, at most c.attempts times in all, and decodes
// the answer's JSON into out (unless out is nil). It returns the status.
func (c *Client) call(ctx context.Context, r request, again func(error) bool, out any, want ...int) (int, error) {
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, r, want...)
		if err == nil {
			err := decodeAnswer(resp, out)
			if err != nil {
				return resp.StatusCode, fmt.Errorf("tincan: %s: answer %d: %w", r.op, resp.StatusCode, err)
			}
			return resp.StatusCode, nil
		}
		if attempt+1 >= c.attempts || ctx.Err() != nil || !again(err) {
			return 0, err
		}
		if err := sleep(ctx, c.pause(attempt, err)); err != nil {
			return 0, err
		}
	}
}

// maxAnswer bounds the answer read into memory (a long-poll's 256
// messages of -max-body each fit).
const maxAnswer = 32 << 20

// decodeAnswer reads resp's whole body (so that its connection is
// reused), decodes its JSON into out unless out is nil, and closes it.
func decodeAnswer(resp *http.Response, out any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// pause is the wait before try attempt+2: the server's Retry-After when it
// sent one, else exponential backoff with jitter, at most 10 s.
func (c *Client) pause(attempt int, err error) time.Duration {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return min(e.RetryAfter, time.Minute)
	}
	d := min(c.backoff<<min(attempt, 10), 10*time.Second)
	return d/2 + mrand.N(d/2+1)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// anyFailure retries network failures and retriable statuses: for calls
// that cannot happen twice (an idempotent post, a read).
func anyFailure(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return retriable(e.Status)
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// nothingDone retries only answers that say the server did nothing and
// asks to come back: 429 and 503. A network failure is not retried, since
// the request may have been done.
func nothingDone(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable)
}

// newKey returns a fresh Idempotency-Key: 128 random bits.
func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
