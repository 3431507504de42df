package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxSamples bounds the memory of one recorder: past it, samples are kept by
// reservoir sampling (uniformly), so percentiles stay unbiased.
const maxSamples = 1 << 21

// recorder collects durations for percentiles. Safe for concurrent use.
type recorder struct {
	mu      sync.Mutex
	samples []time.Duration
	n       int64 // samples offered, kept or not
	max     time.Duration
	rng     *rand.Rand
	limit   int
}

func newRecorder() *recorder { return &recorder{limit: maxSamples} }

func (r *recorder) add(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.max = max(r.max, d)
	if len(r.samples) < r.limit {
		r.samples = append(r.samples, d)
		return
	}
	if r.rng == nil {
		r.rng = rand.New(rand.NewPCG(1, 2))
	}
	if i := r.rng.Int64N(r.n); i < int64(r.limit) {
		r.samples[i] = d
	}
}

// Latency is a summary of durations, in milliseconds in JSON.
type Latency struct {
	N   int64   `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func (r *recorder) summary() Latency {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	n, mx := r.n, r.max
	r.mu.Unlock()
	slices.Sort(s)
	return Latency{
		N:   n,
		P50: ms(percentile(s, 50)),
		P90: ms(percentile(s, 90)),
		P99: ms(percentile(s, 99)),
		Max: ms(mx),
	}
}

// percentile is the nearest-rank percentile of sorted samples: the smallest
// sample with at least p% of the samples at or below it. 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func (l Latency) String() string {
	if l.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)",
		fmtMs(l.P50), fmtMs(l.P90), fmtMs(l.P99), fmtMs(l.Max), l.N)
}

func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

// counters are the run's tallies, read by the progress line while it runs.
type counters struct {
	messages   atomic.Int64 // bench messages delivered to their recipient
	events     atomic.Int64 // server events delivered (peer-joined, peer-left)
	posted     atomic.Int64 // posts answered 201
	roundTrips atomic.Int64
	calls      atomic.Int64 // completed call setups
	callsDone  atomic.Int64 // calls torn down (bye, leave) as well
	lost       atomic.Int64 // never arrived within the timeout
	late       atomic.Int64 // arrived after being counted lost
	dups       atomic.Int64 // the same message twice
	order      atomic.Int64 // a frame id not above the previous one
	unexpected atomic.Int64 // a bench message nobody sent (or sent by an earlier run)
	reconnects atomic.Int64 // event streams reopened with Last-Event-ID
	heartbeats atomic.Int64 // SSE comment lines
	acks       atomic.Int64 // acknowledgements of SSE receivers (-ack-every)
	streams    atomic.Int64 // streams open now
	errors     atomic.Int64

	errMu   sync.Mutex
	errKind map[string]int64
}

// fail counts an error under a short kind ("post: 429 too_many_messages").
func (c *counters) fail(kind string) {
	c.errors.Add(1)
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.errKind == nil {
		c.errKind = map[string]int64{}
	}
	if _, ok := c.errKind[kind]; !ok && len(c.errKind) >= 50 {
		kind = "other"
	}
	c.errKind[kind]++
}

func (c *counters) errorKinds() map[string]int64 {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	out := make(map[string]int64, len(c.errKind))
	for k, v := range c.errKind {
		out[k] = v
	}
	return out
}

// Result is what a run reports (the -json output).
type Result struct {
	Workload      string           `json:"workload"`
	Transport     string           `json:"transport"`
	Rooms         int              `json:"rooms"`
	K             int              `json:"k,omitempty"`
	ThinkMs       float64          `json:"think_ms,omitempty"`
	Size          int              `json:"size,omitempty"`
	Candidates    int              `json:"candidates,omitempty"`       // calls: each way
	Window        int              `json:"candidate_window,omitempty"` // calls: candidates in flight per side
	Batch         bool             `json:"batch,omitempty"`            // calls: candidates in one batch POST per side
	ElapsedSec    float64          `json:"elapsed_s"`
	SetupSec      float64          `json:"setup_s"`
	Messages      int64            `json:"messages"`
	MessagesPS    float64          `json:"messages_per_s"`
	Events        int64            `json:"server_events"`
	Posted        int64            `json:"posted"`
	RoundTrips    int64            `json:"round_trips,omitempty"`
	Calls         int64            `json:"calls,omitempty"`
	CallsPS       float64          `json:"calls_per_s,omitempty"`
	RoundTrip     Latency          `json:"round_trip"`
	Delivery      Latency          `json:"delivery"` // post start to arrival, one way
	Post          Latency          `json:"post"`     // POST answered 201 (committed)
	Setup         Latency          `json:"setup"`    // calls: first join to every offer/answer/candidate received
	Errors        int64            `json:"errors"`
	ErrorKinds    map[string]int64 `json:"error_kinds,omitempty"`
	Lost          int64            `json:"lost"`
	Late          int64            `json:"late"`
	Duplicates    int64            `json:"duplicates"`
	OutOfOrder    int64            `json:"out_of_order"`
	Unexpected    int64            `json:"unexpected"`
	Reconnects    int64            `json:"reconnects"`
	Heartbeats    int64            `json:"heartbeats,omitempty"`
	Acks          int64            `json:"acks,omitempty"` // SSE receivers' acknowledgements
	Streams       int              `json:"streams,omitempty"`
	BenchCPUCores float64          `json:"bench_cpu_cores"` // CPU this load generator used
	Server        *Server          `json:"server,omitempty"`
	// joins (joins.go) and the apps options (-jwt, -webhook-listen)
	Auth             string  `json:"auth,omitempty"` // joins: open, hs256 or es256
	Joins            int64   `json:"joins,omitempty"`
	JoinsPS          float64 `json:"joins_per_s,omitempty"`
	Join             Latency `json:"join"`                           // joins: POST join answered 201
	ServerCPUPerOpUs float64 `json:"server_cpu_us_per_op,omitempty"` // joins: per join (and its leave); calls: per call
	// Per delivered message (pingpong): the server's CPU and heap
	// allocations, and this load generator's CPU (issue 20's figures).
	ServerCPUPerMsgUs  float64        `json:"server_cpu_us_per_msg,omitempty"`
	ServerAllocsPerMsg float64        `json:"server_allocs_per_msg,omitempty"`
	BenchCPUPerMsgUs   float64        `json:"bench_cpu_us_per_msg,omitempty"`
	Webhooks           *WebhookResult `json:"webhooks,omitempty"`
}

// Server is what the server's /metrics said about the run.
type Server struct {
	Commits          float64 `json:"commits"`
	Writes           float64 `json:"writes"`
	WritesPerCommit  float64 `json:"writes_per_commit"`
	CommitMeanMs     float64 `json:"commit_mean_ms,omitempty"`
	DBBytesBefore    float64 `json:"db_bytes_before"`
	DBBytesAfter     float64 `json:"db_bytes_after"` // after teardown (rooms left)
	CPUCores         float64 `json:"cpu_cores,omitempty"`
	CPUSeconds       float64 `json:"cpu_seconds,omitempty"` // process_cpu_seconds_total over the measured phase
	Mallocs          float64 `json:"mallocs,omitempty"`     // heap objects allocated over the measured phase
	RSSBytes         float64 `json:"rss_bytes,omitempty"`
	RSSPerStream     float64 `json:"rss_bytes_per_stream,omitempty"`
	HeapPerStream    float64 `json:"heap_bytes_per_stream,omitempty"`  // Go heap in use
	StackPerStream   float64 `json:"stack_bytes_per_stream,omitempty"` // goroutine stacks
	Goroutines       float64 `json:"goroutines,omitempty"`
	GoroutinesPerStr float64 `json:"goroutines_per_stream,omitempty"`
	StreamsOpen      float64 `json:"streams_open,omitempty"`
}

func (r *Result) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// Text is the human-readable report.
func (r *Result) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "workload %s  transport %s  rooms %d", r.Workload, r.Transport, r.Rooms)
	if r.K > 0 {
		fmt.Fprintf(&b, "  k %d", r.K)
	}
	if r.ThinkMs > 0 {
		fmt.Fprintf(&b, "  think %s", fmtMs(r.ThinkMs))
	}
	if r.Size > 0 {
		fmt.Fprintf(&b, "  size %dB", r.Size)
	}
	if r.Batch {
		fmt.Fprintf(&b, "  candidates %d, in one batch per side", r.Candidates)
	} else if r.Window > 0 {
		fmt.Fprintf(&b, "  candidates %d, %d at once", r.Candidates, r.Window)
	}
	fmt.Fprintf(&b, "\nsetup %.2fs, measured %.2fs\n", r.SetupSec, r.ElapsedSec)
	fmt.Fprintf(&b, "messages     %d delivered, %.0f/s  (posted %d, server events %d)\n", r.Messages, r.MessagesPS, r.Posted, r.Events)
	if r.RoundTrips > 0 || r.RoundTrip.N > 0 {
		fmt.Fprintf(&b, "round trips  %d\n", r.RoundTrips)
	}
	if r.Workload == "calls" {
		fmt.Fprintf(&b, "calls        %d set up, %.1f/s\n", r.Calls, r.CallsPS)
	}
	if r.RoundTrip.N > 0 {
		fmt.Fprintf(&b, "round trip   %s\n", r.RoundTrip)
	}
	if r.Setup.N > 0 {
		fmt.Fprintf(&b, "call setup   %s\n", r.Setup)
	}
	if r.Workload == "joins" {
		fmt.Fprintf(&b, "joins        %d (auth %s), %.1f/s\n", r.Joins, r.Auth, r.JoinsPS)
	}
	if r.Join.N > 0 {
		fmt.Fprintf(&b, "join (201)   %s\n", r.Join)
	}
	if r.ServerCPUPerOpUs > 0 {
		op := "call"
		if r.Workload == "joins" {
			op = "join+leave"
		}
		fmt.Fprintf(&b, "server cpu   %.0f µs per %s\n", r.ServerCPUPerOpUs, op)
	}
	if w := r.Webhooks; w != nil {
		b.WriteString(w.Text())
	}
	if r.Delivery.N > 0 {
		fmt.Fprintf(&b, "delivery     %s\n", r.Delivery)
	}
	if r.Post.N > 0 {
		fmt.Fprintf(&b, "post (201)   %s\n", r.Post)
	}
	if r.Streams > 0 {
		fmt.Fprintf(&b, "streams      %d held, %d heartbeats received\n", r.Streams, r.Heartbeats)
	}
	if r.Acks > 0 {
		fmt.Fprintf(&b, "acks         %d (SSE receivers acknowledging what arrived)\n", r.Acks)
	}
	fmt.Fprintf(&b, "errors %d  lost %d  late %d  duplicates %d  out-of-order %d  unexpected %d  reconnects %d\n",
		r.Errors, r.Lost, r.Late, r.Duplicates, r.OutOfOrder, r.Unexpected, r.Reconnects)
	kinds := make([]string, 0, len(r.ErrorKinds))
	for k := range r.ErrorKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	limited := false
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %6d  %s\n", r.ErrorKinds[k], k)
		limited = limited || strings.Contains(k, "rate_limited")
	}
	if limited {
		b.WriteString("  (the server rate-limits the bench: start it with -rate-limit 0 -member-rate-limit 0 -max-streams-per-ip 0)\n")
	}
	if r.BenchCPUCores > 0 {
		fmt.Fprintf(&b, "bench cpu    %.2f cores (this load generator)\n", r.BenchCPUCores)
	}
	if r.ServerCPUPerMsgUs > 0 {
		fmt.Fprintf(&b, "per message  server cpu %.1f µs, %.1f allocs; bench cpu %.1f µs\n", r.ServerCPUPerMsgUs, r.ServerAllocsPerMsg, r.BenchCPUPerMsgUs)
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(&b, "server       %.0f writes in %.0f commits: %.1f writes/commit", s.Writes, s.Commits, s.WritesPerCommit)
		if s.CommitMeanMs > 0 {
			fmt.Fprintf(&b, " (mean commit %.2fms)", s.CommitMeanMs)
		}
		if s.CPUCores > 0 {
			fmt.Fprintf(&b, ", cpu %.2f cores", s.CPUCores)
		}
		b.WriteString("\n")
		fmt.Fprintf(&b, "bbolt file   %s before, %s after\n", fmtBytes(s.DBBytesBefore), fmtBytes(s.DBBytesAfter))
		if s.RSSBytes > 0 {
			fmt.Fprintf(&b, "server rss   %s", fmtBytes(s.RSSBytes))
			if s.RSSPerStream > 0 {
				fmt.Fprintf(&b, ", %s per stream (Go heap %s + stacks %s)", fmtBytes(s.RSSPerStream), fmtBytes(s.HeapPerStream), fmtBytes(s.StackPerStream))
			}
			if s.Goroutines > 0 {
				fmt.Fprintf(&b, ", %.0f goroutines", s.Goroutines)
				if s.GoroutinesPerStr > 0 {
					fmt.Fprintf(&b, " (%.1f per stream)", s.GoroutinesPerStr)
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// cores is CPU time per wall time.
func cores(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return round2(cpu.Seconds() / wall.Seconds())
}

func fmtBytes(v float64) string {
	switch {
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", v)
	}
}
