// Package bench is tincan's load generator (`tincan bench`): it drives a
// running server over HTTP like real peers do (join, post, receive by
// Server-Sent Events or long-poll, leave) and reports throughput, latency
// percentiles, errors and lost messages, and what the server's /metrics say
// about group commit, CPU, memory and the bbolt file.
//
// Workloads:
//
//	pingpong  R rooms x 2 peers; each pair bounces a message K times
//	calls     call setups: join, offer, answer, candidates each way, bye, leave
//	idle      R rooms x 2 peers holding event streams open (memory, CPU per stream)
//	fill      R rooms x 2 peers, K messages per room left unread (for restart tests)
//	joins     R workers join a room of their own and leave it, again and again
//	          (-jwt hs256|es256: with join tokens minted beforehand)
//	etcd      R writers send the etcd at -etcd a post's transaction, one after
//	          another: etcd's own figure beside tincan's cluster (etcdload.go)
//
// -webhook-listen adds a webhook receiver to any workload (webhooks.go).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tincan/tincan/client"
)

type config struct {
	url             string
	workload        string
	transport       string
	rooms           int
	k               int
	think           time.Duration
	duration        time.Duration
	count           int
	size            int
	sdpSize         int
	candidates      int
	candidateWindow int
	batch           bool
	timeout         time.Duration
	pollWait        time.Duration
	conc            int
	settle          time.Duration
	prefix          string
	json            bool
	progress        time.Duration
	idem            bool
	cpuProfile      string
	ackEvery        time.Duration
	jwt             string        // joins: "", hs256 or es256
	jwtSecret       string        // -jwt hs256
	jwtKey          string        // -jwt es256: PEM file of the P-256 private key
	webhookListen   string        // address of the bench's webhook receiver; "" = none
	webhookDrain    time.Duration // after the work, wait this long at most for the outbox to drain
	etcd            string        // -workload etcd: the etcd client URLs (etcdload.go)
	etcdWatch       bool          // -workload etcd: each write waits for a watch to deliver it
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("tincan bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tincan bench [flags]\n\n"+
			"Drives a running tincan over HTTP. Workloads: pingpong (R rooms x 2 peers bounce a message K times),\n"+
			"calls (join, offer, answer, candidates, bye, leave), idle (hold R x 2 event streams open),\n"+
			"fill (R rooms with K unread messages each, for restart tests), joins (R workers join and leave rooms; -jwt for join tokens).\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of the tincan server")
	fs.StringVar(&c.workload, "workload", "pingpong", "pingpong | calls | idle | fill | joins | etcd")
	fs.StringVar(&c.transport, "transport", "sse", "receive by sse | poll")
	fs.IntVar(&c.rooms, "rooms", 100, "rooms (pingpong, idle, fill); concurrent calls (calls); concurrent joiners (joins)")
	fs.IntVar(&c.k, "k", 1000, "round trips per room (pingpong); messages per room (fill)")
	fs.DurationVar(&c.think, "think", 0, "pause between round trips of a room (pingpong)")
	fs.DurationVar(&c.duration, "duration", 60*time.Second, "stop starting new work after this long (idle: how long to hold)")
	fs.IntVar(&c.count, "count", 0, "stop after this many round trips (pingpong), calls (calls) or joins (joins; with -jwt, 0 = 60000 tokens) in total; 0 = no limit")
	fs.IntVar(&c.size, "size", 200, "bytes of each pingpong message body")
	fs.IntVar(&c.sdpSize, "sdp-size", 4096, "bytes of the offer and answer SDP (calls)")
	fs.IntVar(&c.candidates, "candidates", 20, "ICE candidates each way (calls)")
	fs.BoolVar(&c.batch, "batch", true, "calls: each side posts its candidates in one batch POST (a JSON array), as tincan.js posts a burst; false: one POST per candidate, -candidate-window at a time")
	fs.IntVar(&c.candidateWindow, "candidate-window", 4, "with -batch=false: candidates in flight at once per side (calls), as a browser has about 6 connections per host; 1 = one at a time")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "a message not received within this long is lost; also each request's timeout")
	fs.DurationVar(&c.pollWait, "poll-wait", 25*time.Second, "long-poll wait")
	fs.IntVar(&c.conc, "conc", 32, "concurrent joins and stream opens while setting up (idle, fill, pingpong)")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "idle: wait this long after the streams are open before measuring memory")
	fs.StringVar(&c.prefix, "prefix", "bench", "room name prefix (a random run id is added)")
	fs.BoolVar(&c.idem, "idempotency", true, "send every post with an Idempotency-Key, as tincan.js does")
	fs.BoolVar(&c.json, "json", false, "print the result as JSON")
	fs.DurationVar(&c.progress, "progress", time.Second, "progress line interval on stderr; 0 = none")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	fs.DurationVar(&c.ackEvery, "ack-every", 30*time.Second, "SSE: acknowledge what arrived this often with a long-poll that does not wait, as tincan.js does; 0 = never")
	fs.StringVar(&c.jwt, "jwt", "", "joins: join with a join token (server -auth jwt): hs256 (secret: -jwt-secret or TINCAN_JWT_SECRET) or es256 (-jwt-key); the tokens are minted before the timed part")
	fs.StringVar(&c.jwtSecret, "jwt-secret", "", "-jwt hs256: the server's -jwt-secret (default $TINCAN_JWT_SECRET)")
	fs.StringVar(&c.jwtKey, "jwt-key", "", "-jwt es256: PEM file of the P-256 private key whose public key the server has (-jwt-public-key)")
	fs.StringVar(&c.webhookListen, "webhook-listen", "", "run a webhook receiver on this address (e.g. 127.0.0.1:18090; start the server with -webhook-url http://ADDR/) answering 204, and report events/s and lag")
	fs.DurationVar(&c.webhookDrain, "webhook-drain", 15*time.Second, "with -webhook-listen: after the work, wait at most this long for tincan_webhook_events_pending to reach 0")
	fs.StringVar(&c.etcd, "etcd", "", "-workload etcd: the etcd client URLs, comma-separated (tincan is not involved)")
	fs.BoolVar(&c.etcdWatch, "etcd-watch", false, "-workload etcd: each write also waits until a watch delivers it, as tincan's cluster engine does")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch c.workload {
	case "pingpong", "calls", "idle", "fill", "joins", "etcd":
	default:
		return c, fmt.Errorf("-workload %q: want pingpong, calls, idle, fill, joins or etcd", c.workload)
	}
	switch c.jwt {
	case "":
	case "hs256":
		if c.jwtSecret == "" {
			c.jwtSecret = os.Getenv("TINCAN_JWT_SECRET")
		}
		if c.jwtSecret == "" {
			return c, errors.New("-jwt hs256 needs -jwt-secret or TINCAN_JWT_SECRET")
		}
	case "es256":
		if c.jwtKey == "" {
			return c, errors.New("-jwt es256 needs -jwt-key (PEM private key)")
		}
	default:
		return c, fmt.Errorf("-jwt %q: want hs256 or es256", c.jwt)
	}
	if c.jwt != "" && c.workload != "joins" {
		return c, errors.New("-jwt is for -workload joins")
	}
	if c.transport != "sse" && c.transport != "poll" {
		return c, fmt.Errorf("-transport %q: want sse or poll", c.transport)
	}
	if c.rooms < 1 || c.rooms > 100000 {
		return c, fmt.Errorf("-rooms %d: want 1 to 100000", c.rooms)
	}
	if c.k < 1 {
		return c, fmt.Errorf("-k %d: want at least 1", c.k)
	}
	if c.duration <= 0 || c.timeout <= 0 || c.pollWait <= 0 {
		return c, errors.New("-duration, -timeout and -poll-wait must be positive")
	}
	if c.ackEvery < 0 {
		return c, errors.New("-ack-every must not be negative")
	}
	if c.size < 0 || c.size > 60000 || c.sdpSize < 0 || c.sdpSize > 60000 {
		return c, errors.New("-size and -sdp-size: want 0 to 60000")
	}
	if c.candidates < 0 || c.candidates > 1000 || c.count < 0 || c.think < 0 || c.progress < 0 || c.settle < 0 {
		return c, errors.New("-candidates, -count, -think, -progress and -settle must not be negative (-candidates at most 1000)")
	}
	c.conc = min(max(c.conc, 1), 1024)
	if c.candidateWindow < 1 || c.candidateWindow > 64 {
		return c, fmt.Errorf("-candidate-window %d: want 1 to 64", c.candidateWindow)
	}
	if !validRoomPrefix(c.prefix) {
		return c, fmt.Errorf("-prefix %q: want 1 to 32 of [A-Za-z0-9_-]", c.prefix)
	}
	return c, nil
}

func validRoomPrefix(p string) bool {
	if len(p) < 1 || len(p) > 32 {
		return false
	}
	for _, r := range p {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Run is `tincan bench`: it parses args, drives the server at -url until the
// workload is done (or -duration passed, or ctx ends), then prints the result
// to stdout and progress lines to stderr. It returns an error when the
// workload could not be set up; lost messages and request errors are
// reported in the result, not as an error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := run(ctx, cfg, stderr)
	if res != nil {
		if cfg.json {
			out, jerr := res.JSON()
			if jerr != nil {
				return jerr
			}
			fmt.Fprintf(stdout, "%s\n", out)
		} else {
			fmt.Fprint(stdout, res.Text())
		}
	}
	return err
}

// bench is one run.
type bench struct {
	cfg      config
	c        *counters
	hc       *http.Client   // the tuned transport: the client's and /metrics'
	cl       *client.Client // the public API
	stderr   io.Writer
	runID    string
	rtt      *recorder
	delivery *recorder
	post     *recorder
	setup    *recorder
	join     *recorder     // joins
	hooks0   metrics       // -webhook-listen: the scrape before the work
	budget   atomic.Int64  // -count left; negative: no limit
	keyN     atomic.Uint64 // Idempotency-Keys handed out
	cpu      time.Duration // this process's CPU over the measured phase
}

func run(ctx context.Context, cfg config, stderr io.Writer) (*Result, error) {
	b := &bench{
		cfg:      cfg,
		c:        &counters{},
		stderr:   stderr,
		runID:    strconv.FormatUint(rand.Uint64()%(36*36*36*36*36*36), 36),
		rtt:      newRecorder(),
		delivery: newRecorder(),
		post:     newRecorder(),
		setup:    newRecorder(),
	}
	b.budget.Store(-1)
	if cfg.count > 0 {
		b.budget.Store(int64(cfg.count))
	}
	// Connections: an event stream (or long-poll) and a post in flight per
	// peer, two peers per room, and a few for /metrics.
	conns := 4*cfg.rooms + 16
	if cfg.workload == "calls" { // a stream and -candidate-window posts per peer
		conns = 2*(1+cfg.candidateWindow)*cfg.rooms + 16
	}
	b.hc = newHTTPClient(conns)
	defer b.hc.CloseIdleConnections()
	var err error
	if b.cl, err = newClient(cfg.url, b.hc); err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	var hooks *hookReceiver
	if cfg.webhookListen != "" {
		if hooks, err = startHookReceiver(cfg.webhookListen); err != nil {
			return nil, err
		}
		defer hooks.close()
	}
	res := &Result{Workload: cfg.workload, Transport: cfg.transport, Rooms: cfg.rooms}
	switch cfg.workload {
	case "pingpong":
		res.K, res.Size = cfg.k, cfg.size
		res.ThinkMs = ms(cfg.think)
		err = b.pingpong(ctx, res)
	case "calls":
		res.Candidates, res.Window, res.Batch = cfg.candidates, cfg.candidateWindow, cfg.batch
		err = b.calls(ctx, res)
	case "idle":
		res.Transport = "sse"
		err = b.idle(ctx, res)
	case "fill":
		res.K, res.Transport = cfg.k, "none"
		err = b.fill(ctx, res)
	case "joins":
		res.Transport = "none"
		err = b.joins(ctx, res)
	case "etcd":
		res.Transport, res.Size = "etcd", cfg.size
		if cfg.etcdWatch {
			res.Transport = "etcd+watch"
		}
		err = b.etcd(ctx, res)
	}
	if hooks != nil {
		res.Webhooks = b.drainHooks(ctx, hooks, res)
	}
	b.finish(res)
	return res, err
}

// finish copies the counters into the result.
func (b *bench) finish(res *Result) {
	c := b.c
	res.Messages, res.Events, res.Posted = c.messages.Load(), c.events.Load(), c.posted.Load()
	res.RoundTrips, res.Calls = c.roundTrips.Load(), c.calls.Load()
	if res.ElapsedSec > 0 {
		res.MessagesPS = round2(float64(res.Messages) / res.ElapsedSec)
		if res.Workload == "calls" {
			res.CallsPS = round2(float64(res.Calls) / res.ElapsedSec)
		}
	}
	res.RoundTrip, res.Delivery, res.Post, res.Setup = b.rtt.summary(), b.delivery.summary(), b.post.summary(), b.setup.summary()
	if b.join != nil {
		res.Join = b.join.summary()
	}
	if s := res.Server; s != nil && s.CPUSeconds > 0 {
		ops := res.Calls
		if res.Workload == "joins" {
			ops = res.Joins
		}
		if ops > 0 && (res.Workload == "joins" || res.Workload == "calls") {
			res.ServerCPUPerOpUs = math.Round(s.CPUSeconds/float64(ops)*1e7) / 10
		}
	}
	if s := res.Server; s != nil && res.Workload == "pingpong" && res.Messages > 0 {
		n := float64(res.Messages)
		res.ServerCPUPerMsgUs = math.Round(s.CPUSeconds/n*1e7) / 10
		res.ServerAllocsPerMsg = math.Round(s.Mallocs/n*10) / 10
		res.BenchCPUPerMsgUs = math.Round(b.cpu.Seconds()/n*1e7) / 10
	}
	res.Errors, res.ErrorKinds = c.errors.Load(), c.errorKinds()
	res.Lost, res.Late, res.Duplicates = c.lost.Load(), c.late.Load(), c.dups.Load()
	res.OutOfOrder, res.Unexpected, res.Reconnects = c.order.Load(), c.unexpected.Load(), c.reconnects.Load()
	res.Heartbeats, res.Acks = c.heartbeats.Load(), c.acks.Load()
}

// take reserves one unit of -count; false when it is used up.
func (b *bench) take() bool {
	for {
		n := b.budget.Load()
		if n < 0 {
			return true
		}
		if n == 0 {
			return false
		}
		if b.budget.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// room names a room of this run.
func (b *bench) room(kind string, i, j int) string {
	name := fmt.Sprintf("%s-%s-%s%d", b.cfg.prefix, b.runID, kind, i)
	if j >= 0 {
		name += "-" + strconv.Itoa(j)
	}
	return name
}

// opCtx bounds one request.
func (b *bench) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.timeout)
}

// send posts a registered bench message to every other member, recording
// how long the commit took. A failed post is counted as an error and struck
// off the ledger.
func (b *bench) send(ctx context.Context, p *client.Member, l *ledger, body func(seq uint64) []byte) bool {
	return b.sendTo(ctx, p, "", l, body)
}

// sendTo is send to one member (to: its client id).
func (b *bench) sendTo(ctx context.Context, p *client.Member, to string, l *ledger, body func(seq uint64) []byte) bool {
	start := time.Now()
	seq := l.send(start)
	data := body(seq)
	if to != "" { // {"to":"…",<the rest>
		data = append([]byte(`{"to":"`+to+`",`), data[1:]...)
	}
	var key string
	if b.cfg.idem {
		key = b.runID + "-" + strconv.FormatUint(b.keyN.Add(1), 36)
	}
	octx, cancel := b.opCtx(ctx)
	_, err := p.Send(octx, json.RawMessage(data), &client.SendOptions{IdempotencyKey: key, NoIdempotencyKey: !b.cfg.idem})
	cancel()
	if err != nil {
		l.cancel(seq)
		if ctx.Err() == nil {
			b.c.fail(kind("post", err))
		}
		return false
	}
	b.post.add(time.Since(start))
	b.c.posted.Add(1)
	return true
}

// sendBatchTo posts n messages to peer to in one batch POST (a JSON
// array), the i-th made by body(seq, i); it reports whether the batch
// was stored.
func (b *bench) sendBatchTo(ctx context.Context, p *client.Member, to string, l *ledger, n int, body func(seq uint64, i int) []byte) bool {
	start := time.Now()
	seqs := make([]uint64, n)
	msgs := make([]any, n)
	for i := range n {
		seqs[i] = l.send(start)
		el := body(seqs[i], i)
		if to != "" { // {"to":"…",<the rest>
			el = append([]byte(`{"to":"`+to+`",`), el[1:]...)
		}
		msgs[i] = json.RawMessage(el)
	}
	var key string
	if b.cfg.idem {
		key = b.runID + "-" + strconv.FormatUint(b.keyN.Add(1), 36)
	}
	octx, cancel := b.opCtx(ctx)
	_, err := p.SendBatch(octx, msgs, &client.SendOptions{IdempotencyKey: key, NoIdempotencyKey: !b.cfg.idem})
	cancel()
	if err != nil {
		for _, seq := range seqs {
			l.cancel(seq)
		}
		if ctx.Err() == nil {
			b.c.fail(kind("post", err))
		}
		return false
	}
	b.post.add(time.Since(start))
	b.c.posted.Add(int64(n))
	return true
}

// arrived accounts for a delivered message: server events are counted, bench
// messages are struck off the ledger. It returns the message type and whether
// it is a bench message arriving for the first time in time.
func (b *bench) arrived(l *ledger, m message) (string, bool) {
	seq, ok := jsonUint(m.data, `"seq":`)
	typ := jsonType(m.data)
	if !ok {
		b.c.events.Add(1)
		return typ, false
	}
	sent, st := l.arrive(seq)
	switch st {
	case arrivedOK:
		b.c.messages.Add(1)
		b.delivery.add(m.at.Sub(sent))
		return typ, true
	case arrivedLate:
		b.c.late.Add(1)
	case arrivedDuplicate:
		b.c.dups.Add(1)
	default:
		b.c.unexpected.Add(1)
	}
	return typ, false
}

// benchBody is a bench message of about size bytes:
// {"type":"ping","seq":N,"pad":"xxx…"}.
func benchBody(typ string, seq uint64, size int) []byte {
	b := make([]byte, 0, max(size, 64))
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"pad":"`...)
	for n := size - len(b) - 2; n > 0; n-- {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// progress prints a line every interval until stop is closed.
// measure runs work between two scrapes of the server's metrics, with a
// progress line (extra adds to it; nil for none), and records in res the
// time it took, this process's CPU and what the server did meanwhile. It
// returns the scrape taken after the work (nil when /metrics failed).
func (b *bench) measure(ctx context.Context, res *Result, extra func() string, work func()) metrics {
	m0 := b.scrape(ctx)
	b.hooks0 = m0
	stopProgress := make(chan struct{})
	pw := b.progress(stopProgress, extra)
	start, cpu0 := time.Now(), cpuTime()
	work()
	elapsed := time.Since(start)
	close(stopProgress)
	pw.Wait()
	res.ElapsedSec = round2(elapsed.Seconds())
	b.cpu = cpuTime() - cpu0
	res.BenchCPUCores = cores(b.cpu, elapsed)
	m1 := b.scrape(ctx)
	res.Server = serverDelta(m0, m1, elapsed.Seconds())
	return m1
}

func (b *bench) progress(stop <-chan struct{}, extra func() string) *sync.WaitGroup {
	var wg sync.WaitGroup
	if b.cfg.progress <= 0 {
		return &wg
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(b.cfg.progress)
		defer t.Stop()
		start := time.Now()
		var lastMsgs, lastCalls int64
		last := start
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				msgs, calls := b.c.messages.Load(), b.c.calls.Load()
				dt := now.Sub(last).Seconds()
				var s strings.Builder
				fmt.Fprintf(&s, "[%6.1fs] messages %d (%.0f/s)", now.Sub(start).Seconds(), msgs, float64(msgs-lastMsgs)/dt)
				if b.cfg.workload == "pingpong" {
					fmt.Fprintf(&s, " round trips %d", b.c.roundTrips.Load())
				}
				if b.cfg.workload == "calls" {
					fmt.Fprintf(&s, " calls %d (%.0f/s)", calls, float64(calls-lastCalls)/dt)
				}
				fmt.Fprintf(&s, " streams %d errors %d lost %d", b.c.streams.Load(), b.c.errors.Load(), b.c.lost.Load())
				if extra != nil {
					s.WriteString(extra())
				}
				fmt.Fprintln(b.stderr, s.String())
				lastMsgs, lastCalls, last = msgs, calls, now
			}
		}
	}()
	return &wg
}

// parallel runs f(i) for i in [0, n) with at most conc at a time and
// returns the first error (the others still run to their end).
func parallel(ctx context.Context, n, conc int, f func(ctx context.Context, i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  atomic.Int64
	)
	for range min(n, conc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// scrape reads /metrics; nil (and a note on stderr) when it cannot.
func (b *bench) scrape(ctx context.Context) metrics {
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	m, err := scrape(octx, b.hc, b.cfg.url)
	if err != nil {
		fmt.Fprintf(b.stderr, "bench: /metrics: %v\n", err)
		return nil
	}
	return m
}
