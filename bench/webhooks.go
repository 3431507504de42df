package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tincan/tincan/client"
)

// The webhook samples the bench reads.
const (
	mHookPending   = "tincan_webhook_events_pending"
	mHookDelivered = "tincan_webhook_delivered_total"
	mHookRetries   = "tincan_webhook_retries_total"
	mHookSeconds   = "tincan_webhook_delivery_seconds"
)

// hookReceiver is -webhook-listen: a webhook endpoint on loopback that
// answers 204 at once and counts what it gets. Lag is the receipt time
// minus the body's "timestamp" (the change's time, RFC 3339 with
// nanoseconds; same host, same clock). It decodes the body as the client
// package's WebhookEvent but does not check signatures (client.VerifyWebhook
// would need the server's -webhook-secret and costs an HMAC per event).
type hookReceiver struct {
	srv  *http.Server
	ln   net.Listener
	lag  *recorder
	n    atomic.Int64 // events received (answered 204)
	dups atomic.Int64 // a webhook-id seen before
	bad  atomic.Int64 // a body without a type or timestamp
	mu   sync.Mutex
	ids  map[string]struct{}
	typ  map[string]int64
}

func startHookReceiver(addr string) (*hookReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-webhook-listen: %w", err)
	}
	h := &hookReceiver{ln: ln, lag: newRecorder(), ids: map[string]struct{}{}, typ: map[string]int64{}}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go h.srv.Serve(ln)
	return h, nil
}

func (h *hookReceiver) close() { h.srv.Close() }

// addr is where it listens.
func (h *hookReceiver) addr() string { return h.ln.Addr().String() }

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	at := time.Now()
	var ev client.WebhookEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.Type == "" || ev.Timestamp.IsZero() {
		h.bad.Add(1)
	} else {
		h.lag.add(at.Sub(ev.Timestamp))
	}
	id := r.Header.Get("webhook-id")
	h.mu.Lock()
	if _, seen := h.ids[id]; seen {
		h.dups.Add(1)
	}
	h.ids[id] = struct{}{}
	h.typ[ev.Type]++
	h.mu.Unlock()
	h.n.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// WebhookResult is what the receiver got and what /metrics said.
type WebhookResult struct {
	Received       int64            `json:"received"`         // by the end of the measured phase
	ReceivedPS     float64          `json:"received_per_s"`   // over the measured phase
	ReceivedTotal  int64            `json:"received_total"`   // after the drain
	ByType         map[string]int64 `json:"by_type"`          // after the drain
	Duplicates     int64            `json:"duplicates"`       // webhook-ids received twice
	Bad            int64            `json:"bad"`              // bodies without type or timestamp
	Lag            Latency          `json:"lag"`              // change → receipt, every event received
	PendingEnd     float64          `json:"pending_at_end"`   // tincan_webhook_events_pending when the work ended
	DrainSec       float64          `json:"drain_s"`          // from the end of the work to pending 0
	PendingDrained float64          `json:"pending_after"`    // at the end of the drain
	Delivered      float64          `json:"delivered_metric"` // Δtincan_webhook_delivered_total, start → drained
	Retries        float64          `json:"retries_metric"`
	HistMeanMs     float64          `json:"hist_mean_ms"`   // tincan_webhook_delivery_seconds: Δsum/Δcount
	HistP50LeMs    float64          `json:"hist_p50_le_ms"` // the bucket bound the median falls under
	HistP99LeMs    float64          `json:"hist_p99_le_ms"`
}

// drainHooks waits (at most -webhook-drain) until the server's outbox is
// empty and reports on the receiver. m0 is the scrape before the work;
// the counts at the end of the work are taken first.
func (b *bench) drainHooks(ctx context.Context, h *hookReceiver, res *Result) *WebhookResult {
	w := &WebhookResult{Received: h.n.Load()}
	if res.ElapsedSec > 0 {
		w.ReceivedPS = round2(float64(w.Received) / res.ElapsedSec)
	}
	end := b.scrape(ctx)
	w.PendingEnd = end[mHookPending]
	t0 := time.Now()
	last := end
	for last != nil && last[mHookPending] > 0 && time.Since(t0) < b.cfg.webhookDrain && ctx.Err() == nil {
		sleep(ctx, 100*time.Millisecond)
		last = b.scrape(ctx)
	}
	time.Sleep(50 * time.Millisecond) // the last 2xx answered before the metric moved
	w.DrainSec = round2(time.Since(t0).Seconds())
	w.PendingDrained = last[mHookPending]
	w.ReceivedTotal, w.Duplicates, w.Bad = h.n.Load(), h.dups.Load(), h.bad.Load()
	h.mu.Lock()
	w.ByType = make(map[string]int64, len(h.typ))
	for k, v := range h.typ {
		w.ByType[k] = v
	}
	h.mu.Unlock()
	w.Lag = h.lag.summary()
	if b.hooks0 != nil && last != nil {
		w.Delivered = last[mHookDelivered] - b.hooks0[mHookDelivered]
		w.Retries = last[mHookRetries] - b.hooks0[mHookRetries]
		if dc := last[mHookSeconds+"_count"] - b.hooks0[mHookSeconds+"_count"]; dc > 0 {
			w.HistMeanMs = round2((last[mHookSeconds+"_sum"] - b.hooks0[mHookSeconds+"_sum"]) / dc * 1000)
		}
		w.HistP50LeMs = histQuantile(b.hooks0, last, mHookSeconds, 0.50) * 1000
		w.HistP99LeMs = histQuantile(b.hooks0, last, mHookSeconds, 0.99) * 1000
	}
	return w
}

// histQuantile is the upper bound of the histogram bucket that the q-th
// quantile of the observations between two scrapes falls in; NaN-free: 0
// when there are none, +Inf is reported as -1.
func histQuantile(m0, m1 metrics, name string, q float64) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range m1 {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		s := strings.TrimSuffix(strings.TrimPrefix(k, prefix), `"}`)
		le, err := strconv.ParseFloat(s, 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, v - m0[k]})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n <= 0 {
		return 0
	}
	want := q * bs[len(bs)-1].n
	for _, x := range bs {
		if x.n >= want {
			if math.IsInf(x.le, 1) {
				return -1
			}
			return x.le
		}
	}
	return -1
}

func (w *WebhookResult) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "webhooks     %d received during the run, %.1f/s; %d in all after a drain of %.2fs (pending %.0f at the end of the run, %.0f after)\n",
		w.Received, w.ReceivedPS, w.ReceivedTotal, w.DrainSec, w.PendingEnd, w.PendingDrained)
	types := make([]string, 0, len(w.ByType))
	for k := range w.ByType {
		types = append(types, k)
	}
	sort.Strings(types)
	b.WriteString("  by type:")
	for _, k := range types {
		fmt.Fprintf(&b, " %s %d", k, w.ByType[k])
	}
	fmt.Fprintf(&b, "\n  duplicates %d  bad bodies %d  delivered (metric) %.0f  retries %.0f\n", w.Duplicates, w.Bad, w.Delivered, w.Retries)
	fmt.Fprintf(&b, "webhook lag  %s (change → receipt)\n", w.Lag)
	fmt.Fprintf(&b, "  tincan_webhook_delivery_seconds: mean %s, p50 ≤ %gms, p99 ≤ %gms (bucket bounds)\n", fmtMs(w.HistMeanMs), w.HistP50LeMs, w.HistP99LeMs)
	return b.String()
}
