// Package webhook delivers the store's outbox (store.Apps: Outbox,
// Delivered, OutboxChanged, ClaimOutbox) to the application's URL in the
// Standard Webhooks format (sign.go).
//
// Delivery rules:
//
//   - At least once: an event leaves the outbox (Delivered) only after the
//     receiver's 2xx, or when it is dropped. A crash, a lost claim or a
//     Delivered that fails may repeat an event; its webhook-id ("msg_" +
//     IDPrefix + seq) and body are the same on every attempt, so that the
//     receiver can drop repeats. webhook-timestamp is the time of each
//     attempt.
//   - In order within a room: a room's next event is sent after the
//     previous one's 2xx (or drop). Rooms are independent, up to 32 in
//     flight at once.
//   - Failures: anything but a 2xx is retried — a refused connection, a
//     timeout, a 5xx, 408 and 429, and also every other 4xx and 3xx
//     (redirects are not followed), since a receiver that answers 400,
//     401 or 404 is most often misconfigured or being deployed, and an
//     event dropped at once would be lost for good. The exception is 410
//     Gone: the receiver says it will never want that event, and it is
//     dropped (Error log, dropped metric). Retry-After (429, 503) is
//     honoured up to MaxBackoff.
//   - Backoff: exponential with full jitter, capped at MaxBackoff, until the
//     event is older than MaxAge (from its Time); then it is dropped
//     (Delivered, an Error log line naming room, seq and type, the dropped
//     metric).
//   - Probing: after a failed attempt the receiver is probed: one attempt
//     at a time (the rooms taking turns), spaced by the receiver's own
//     backoff, until an attempt gets a 2xx (or 410); then every room is
//     sent to again at once, without waiting out backoffs, except the
//     room whose failure started the probing, which waits its own backoff
//     (so that a room the receiver rejects alone only briefly slows the
//     others). A deliverer starts probing: its first attempt finds out
//     whether the receiver is there.
//   - Woken by OutboxChanged; polls every 2 s as well.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tincan/tincan/store"
)

// Outbox is what the deliverer needs of a store (store.Apps); every
// store.Store is one.
type Outbox interface {
	Outbox(ctx context.Context, limit int) ([]store.Event, error)
	Delivered(ctx context.Context, events []store.Event) error
	OutboxChanged(f func()) (cancel func())
	ClaimOutbox(ctx context.Context) (lost <-chan struct{}, release func(), err error)
}

var _ Outbox = store.Store(nil)

// Config configures a Deliverer. Zero values take the defaults noted.
type Config struct {
	URL     string   // the receiver: http or https (ParseURL)
	Secrets []string // whsec_… (ParseSecret), at least one; each signs every request
	// Timeout bounds one attempt, connecting to reading the status
	// (default 5s).
	Timeout time.Duration
	// MaxAge is how long an undelivered event is retried, measured from
	// its Time; past it, the event is dropped (default 24h).
	MaxAge time.Duration
	// MaxBackoff caps the delay between two attempts (default 10s).
	MaxBackoff time.Duration
	// IDPrefix goes between "msg_" and the event's seq in webhook-id: the
	// same for a store across restarts, so that a receiver can drop
	// repeats. Letters, digits, '_' and '-' only; ending it with '_'
	// keeps ids of different prefixes apart.
	IDPrefix string
	// HTTPClient sends the requests. nil: a client of its own that does
	// not follow redirects. Timeout applies either way.
	HTTPClient *http.Client
	Logger     *slog.Logger          // nil: no log
	Registry   prometheus.Registerer // takes the metrics; nil: none registered
	Now        func() time.Time      // nil: time.Now
}

// The defaults of Config.
const (
	DefaultTimeout    = 5 * time.Second
	DefaultMaxAge     = 24 * time.Hour
	DefaultMaxBackoff = 10 * time.Second
)

const (
	maxInFlight  = 32              // rooms sent to at once: 8 fell behind the calls workload (BENCHMARKS.md §9.4)
	fetchLimit   = 1000            // events read from the outbox at a time
	pollEvery    = 2 * time.Second // the safety net under OutboxChanged
	maxBodyRead  = 64 << 10        // of an answer, read to reuse the connection
	claimBackoff = time.Second     // after ClaimOutbox fails
)

var idPrefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)

// Deliverer delivers an outbox. It holds no global state: several may run
// in one process (with different registries).
type Deliverer struct {
	url        string
	secrets    []Secret
	timeout    time.Duration
	maxAge     time.Duration
	maxBackoff time.Duration
	idPrefix   string
	client     *http.Client
	log        *slog.Logger
	now        func() time.Time
	outbox     Outbox
	m          *metrics
	running    atomic.Bool
}

// New checks cfg and makes a Deliverer of outbox; Run starts it.
func New(cfg Config, outbox Outbox) (*Deliverer, error) {
	if outbox == nil {
		return nil, errors.New("webhook: no outbox")
	}
	u, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("webhook: no secret: at least one whsec_… secret signs the requests")
	}
	d := &Deliverer{
		url:        u.String(),
		timeout:    cmpOr(cfg.Timeout, DefaultTimeout),
		maxAge:     cmpOr(cfg.MaxAge, DefaultMaxAge),
		maxBackoff: cmpOr(cfg.MaxBackoff, DefaultMaxBackoff),
		idPrefix:   cfg.IDPrefix,
		client:     cfg.HTTPClient,
		log:        cfg.Logger,
		now:        cfg.Now,
		outbox:     outbox,
	}
	for i, s := range cfg.Secrets {
		k, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("%w (secret %d of %d)", err, i+1, len(cfg.Secrets))
		}
		d.secrets = append(d.secrets, k)
	}
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"Timeout", d.timeout}, {"MaxAge", d.maxAge}, {"MaxBackoff", d.maxBackoff}} {
		if c.v < 0 {
			return nil, fmt.Errorf("webhook: %s %v is negative", c.name, c.v)
		}
	}
	if !idPrefixRE.MatchString(cfg.IDPrefix) {
		return nil, fmt.Errorf("webhook: IDPrefix %q: letters, digits, '_' and '-' only", cfg.IDPrefix)
	}
	if d.client == nil {
		// A transport of its own, whose idle connections Run closes.
		d.client = &http.Client{
			Transport:     http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.m, err = newMetrics(cfg.Registry); err != nil {
		return nil, fmt.Errorf("webhook: metrics: %w", err)
	}
	return d, nil
}

func cmpOr(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// ID is the webhook-id of the event of seq seq: the same on every attempt.
func (d *Deliverer) ID(seq uint64) string {
	return "msg_" + d.idPrefix + strconv.FormatUint(seq, 10)
}

// Run claims the outbox (ClaimOutbox) and delivers it until ctx ends or
// the claim is lost; then it claims it again. It returns nil when ctx
// ends, after its requests have stopped; an error only when it is already
// running or the store is closed (store.ErrClosed). Other errors of the
// store are logged and tried again.
func (d *Deliverer) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("webhook: Run is already running")
	}
	defer d.running.Store(false)
	defer d.client.CloseIdleConnections()
	for ctx.Err() == nil {
		lost, release, err := d.outbox.ClaimOutbox(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, store.ErrClosed) {
				return fmt.Errorf("webhook: claiming the outbox: %w", err)
			}
			d.log.Error("webhook: claiming the outbox", "err", err)
			sleep(ctx, claimBackoff)
			continue
		}
		runCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lost:
				cancel()
			case <-runCtx.Done():
			}
		}()
		d.deliver(runCtx)
		cancel()
		release()
		if ctx.Err() == nil {
			d.log.Warn("webhook: the outbox claim was lost; claiming it again")
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type result struct {
	r          *room
	o          outcome
	retryAfter time.Duration
	status     int
	err        error
}

// deliver is one claim's delivery: it returns when ctx ends, after every
// attempt has returned.
func (d *Deliverer) deliver(ctx context.Context) {
	wake := make(chan struct{}, 1)
	cancelSub := d.outbox.OutboxChanged(func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	defer cancelSub()
	results := make(chan result, maxInFlight) // attempts never block on it
	var wg sync.WaitGroup
	defer wg.Wait()
	defer d.m.pending.Set(0)

	s := newSched(maxInFlight, d.maxBackoff)
	rm := newRemover()
	removed := make(chan removal, 1)
	defer func() {
		if rm.inFlight {
			res := <-removed
			rm.done(res.batch, res.err, d.now(), 0)
		}
		rm.flushLast(ctx, d.outbox, 2*time.Second)
	}()
	ticker := time.NewTicker(pollEvery)
	defer ticker.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	fetch, fetchFailing := true, false
	for {
		if fetch {
			fetch = false
			evs, err := d.outbox.Outbox(ctx, fetchLimit)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !fetchFailing {
					d.log.Error("webhook: reading the outbox", "err", err)
				}
				fetchFailing = true
			} else {
				if fetchFailing {
					d.log.Info("webhook: reading the outbox works again")
				}
				fetchFailing = false
				s.merge(rm.filter(evs), len(evs) >= fetchLimit)
			}
		}
		now := d.now()
		for _, e := range s.expired(now, d.maxAge) {
			d.drop(e, fmt.Sprintf("older than the maximum age %v", d.maxAge))
			rm.add(e)
		}
		if batch := rm.start(now); batch != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				removed <- removal{batch, d.outbox.Delivered(ctx, batch)}
			}()
		}
		start, wait := s.next(now, d.maxAge)
		for _, r := range start {
			e := r.queue[0]
			if r.fails > 0 {
				d.m.retries.Inc()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := d.attempt(ctx, e)
				res.r = r
				results <- res
			}()
		}
		d.m.pending.Set(float64(s.total))
		if rm.failing && !rm.inFlight {
			if w := rm.retryAt.Sub(now); w > 0 && (wait <= 0 || w < wait) {
				wait = w
			}
		}
		if wait <= 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-wake:
			fetch = true
		case <-ticker.C:
			fetch = true
		case <-timer.C:
		case res := <-removed:
			if res.err != nil && ctx.Err() == nil {
				if !rm.failing {
					d.log.Error("webhook: removing delivered events from the outbox", "err", res.err, "events", len(res.batch))
				}
			}
			rm.done(res.batch, res.err, d.now(), d.maxBackoff)
		case res := <-results:
			d.finish(s, rm, res)
			for more := true; more; {
				select {
				case res := <-results:
					d.finish(s, rm, res)
				default:
					more = false
				}
			}
			if s.truncated && s.total < fetchLimit/2 {
				fetch = true // the rest of a long backlog
			}
		}
	}
}

// removal is the outcome of a Delivered call of the remover's.
type removal struct {
	batch []store.Event
	err   error
}

// finish records an attempt's result; a delivered (or 410) event goes to
// rm for removal.
func (d *Deliverer) finish(s *sched, rm *remover, res result) {
	if res.o == aborted {
		s.done(res.r, aborted, d.now(), 0)
		return
	}
	r := res.r
	head := r.queue[0]
	wasProbing := s.probing
	now := d.now()
	e, popped, recovered := s.done(r, res.o, now, res.retryAfter)
	if popped {
		rm.add(e)
	}
	switch {
	case res.o == ok:
		d.m.delivered.Inc()
		d.m.latency.Observe(max(now.Sub(e.Time), 0).Seconds())
	case res.o == gone:
		d.drop(e, "the receiver answered 410 Gone")
	case popped:
	default:
		args := []any{"room", head.Room, "seq", head.Seq, "type", head.Type, "attempt", r.fails}
		if res.err != nil {
			args = append(args, "err", res.err)
		} else {
			args = append(args, "status", res.status)
		}
		if !wasProbing {
			d.log.Warn("webhook: delivery failed; probing the receiver until it answers 2xx", args...)
		} else {
			d.log.Debug("webhook: delivery failed", args...)
		}
	}
	if recovered {
		d.log.Info("webhook: the receiver answers again", "room", e.Room, "seq", e.Seq)
	}
}

func (d *Deliverer) drop(e store.Event, why string) {
	d.m.dropped.Inc()
	d.log.Error("webhook: event dropped", "room", e.Room, "seq", e.Seq, "type", e.Type, "id", d.ID(e.Seq), "time", e.Time, "reason", why)
}

// attempt sends e once. The deliverer's remover takes a delivered event
// out of the outbox.
func (d *Deliverer) attempt(ctx context.Context, e store.Event) result {
	status, retryAfter, err := d.post(ctx, e)
	if ctx.Err() != nil {
		return result{o: aborted}
	}
	switch {
	case err != nil:
		return result{o: failed, err: err}
	case status >= 200 && status < 300:
	case status == http.StatusGone:
		// Dropped: removed as a delivered event is.
	default:
		return result{o: failed, status: status, retryAfter: retryAfter}
	}
	if status == http.StatusGone {
		return result{o: gone, status: status}
	}
	return result{o: ok, status: status}
}

func (d *Deliverer) post(ctx context.Context, e store.Event) (status int, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(e.Body))
	if err != nil {
		return 0, 0, err
	}
	Headers(req.Header, d.secrets, d.ID(e.Seq), d.now(), e.Body)
	req.Header.Set("User-Agent", "tincan-webhook")
	resp, err := d.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is known; keep the cause
		}
		return 0, 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyRead))
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.now())
	}
	return resp.StatusCode, retryAfter, nil
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n > 0 {
			return time.Duration(min(n, 86400)) * time.Second
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
