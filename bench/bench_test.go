package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tincan/tincan/handlers"
	"github.com/tincan/tincan/store/boltstore"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		s    []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2), 50, 1 * time.Millisecond},
		{ms(1, 2), 51, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 0, 1 * time.Millisecond},
		{ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{hundred, 50, 50 * time.Millisecond},
		{hundred, 90, 90 * time.Millisecond},
		{hundred, 99, 99 * time.Millisecond},
		{hundred, 99.5, 100 * time.Millisecond},
	} {
		if got := percentile(tc.s, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.s, tc.p, got, tc.want)
		}
	}
}

func TestRecorderSummary(t *testing.T) {
	r := newRecorder()
	for i := 1000; i >= 1; i-- { // out of order on purpose
		r.add(time.Duration(i) * time.Microsecond)
	}
	s := r.summary()
	if s.N != 1000 || s.P50 != 0.5 || s.P90 != 0.9 || s.P99 != 0.99 || s.Max != 1 {
		t.Errorf("summary = %+v", s)
	}
	if empty := newRecorder().summary(); empty.N != 0 || empty.P99 != 0 || empty.String() != "no samples" {
		t.Errorf("empty summary = %+v %q", empty, empty.String())
	}
}

func TestRecorderReservoirBounded(t *testing.T) {
	r := newRecorder()
	r.limit = 100
	for i := 1; i <= 10000; i++ {
		r.add(time.Duration(i) * time.Millisecond)
	}
	if len(r.samples) != 100 || r.n != 10000 {
		t.Fatalf("kept %d samples of %d", len(r.samples), r.n)
	}
	s := r.summary()
	if s.Max != 10000 {
		t.Errorf("max %v, want the true max 10000ms", s.Max)
	}
	// A uniform sample of 1..10000: the median is near 5000.
	if s.P50 < 3500 || s.P50 > 6500 {
		t.Errorf("p50 %vms of a uniform sample is far from 5000ms", s.P50)
	}
}

func TestJSONHelpers(t *testing.T) {
	data := []byte(`{"id":42,"from":"abc","type":"ping","seq":7,"pad":"xx"}`)
	if id, ok := jsonUint(data, `"id":`); !ok || id != 42 {
		t.Errorf("id = %d %v", id, ok)
	}
	if seq, ok := jsonUint(data, `"seq":`); !ok || seq != 7 {
		t.Errorf("seq = %d %v", seq, ok)
	}
	if _, ok := jsonUint([]byte(`{"id":42,"type":"peer-joined"}`), `"seq":`); ok {
		t.Error("seq found in a server event")
	}
	if typ := jsonType(data); typ != "ping" {
		t.Errorf("type = %q", typ)
	}
	for _, size := range []int{0, 10, 200, 4096} {
		b := benchBody("ping", 123, size)
		var v struct {
			Type string
			Seq  uint64
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Type != "ping" || v.Seq != 123 {
			t.Errorf("benchBody(%d) = %s: %v", size, b, err)
		}
		if size >= 40 && len(b) != size {
			t.Errorf("benchBody(%d) is %d bytes", size, len(b))
		}
	}
	offer := sdpTemplate("offer", 4096)
	b := sdpBody(offer, 9)
	var v struct {
		Type, SDP string
		Seq       uint64
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Type != "offer" || v.Seq != 9 || !strings.HasPrefix(v.SDP, "v=0\r\n") {
		t.Errorf("offer %.80s: %v", b, err)
	}
	if len(b) < 4000 || len(b) > 4300 {
		t.Errorf("offer is %d bytes, want about 4 KB", len(b))
	}
	if err := json.Unmarshal(candidateBody(3, 1), &map[string]any{}); err != nil {
		t.Error(err)
	}
	if err := json.Unmarshal(byeBody(3), &map[string]any{}); err != nil {
		t.Error(err)
	}
}

func TestLedger(t *testing.T) {
	l := newLedger()
	now := time.Now()
	a, b, c := l.send(now), l.send(now), l.send(now)
	if _, st := l.arrive(a); st != arrivedOK {
		t.Errorf("first arrival: %v", st)
	}
	if _, st := l.arrive(a); st != arrivedDuplicate {
		t.Errorf("second arrival: %v", st)
	}
	l.cancel(c)
	if n := l.expire(); n != 1 {
		t.Errorf("expired %d, want 1 (b)", n)
	}
	if _, st := l.arrive(b); st != arrivedLate {
		t.Errorf("arrival after expiry: %v", st)
	}
	if _, st := l.arrive(99); st != arrivedUnexpected {
		t.Errorf("arrival of a message never sent: %v", st)
	}
	if l.outstanding() != 0 {
		t.Error("outstanding after everything settled")
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP tincan_commit_writes Writes carried by one group commit.
# TYPE tincan_commit_writes histogram
tincan_commit_writes_bucket{le="1"} 3
tincan_commit_writes_sum 120
tincan_commit_writes_count 10
tincan_db_bytes 1.048576e+06
process_cpu_seconds_total 2.5
`
	m, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if m[mCommitWritesSum] != 120 || m[mCommitWritesCount] != 10 || m[mDBBytes] != 1<<20 || m[`tincan_commit_writes_bucket{le="1"}`] != 3 {
		t.Errorf("parsed %v", m)
	}
	before := metrics{mCommitWritesSum: 20, mCommitWritesCount: 5, mCPU: 1, mDBBytes: 10}
	s := serverDelta(before, m, 2)
	if s.Writes != 100 || s.Commits != 5 || s.WritesPerCommit != 20 || s.CPUCores != 0.75 || s.DBBytesBefore != 10 {
		t.Errorf("delta %+v", s)
	}
}

func TestFlags(t *testing.T) {
	for _, bad := range [][]string{
		{"-workload", "nope"},
		{"-transport", "ws"},
		{"-rooms", "0"},
		{"-k", "0"},
		{"-prefix", "a b"},
		{"-duration", "0s"},
		{"extra"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	if err := Run(context.Background(), []string{"-h"}, io.Discard, io.Discard); err != nil {
		t.Errorf("-h: %v", err)
	}
}

// startServer runs the API on a fresh store, as main does, on httptest.
func startServer(t *testing.T) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "bench.db"), boltstore.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	api := handlers.New(handlers.Config{Heartbeat: 200 * time.Millisecond, Registry: reg}, st)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- api.Run(ctx) }()
	srv := httptest.NewServer(api)
	t.Cleanup(func() {
		api.Drain()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-ran
		st.Close()
	})
	return srv.URL
}

func runJSON(t *testing.T, url string, args ...string) Result {
	t.Helper()
	var out, errs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append([]string{"-url", url, "-json", "-progress", "50ms", "-timeout", "10s"}, args...)
	if err := Run(ctx, args, &out, &errs); err != nil {
		t.Fatalf("Run %q: %v\nstderr:\n%s", args, err, errs.String())
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	return res
}

func checkClean(t *testing.T, res Result) {
	t.Helper()
	if res.Errors != 0 || res.Lost != 0 || res.Late != 0 || res.Duplicates != 0 || res.OutOfOrder != 0 || res.Unexpected != 0 {
		t.Errorf("%s/%s: errors %d %v, lost %d, late %d, dups %d, order %d, unexpected %d",
			res.Workload, res.Transport, res.Errors, res.ErrorKinds, res.Lost, res.Late, res.Duplicates, res.OutOfOrder, res.Unexpected)
	}
	if res.Server == nil {
		t.Errorf("%s: no server metrics", res.Workload)
	} else if res.Workload != "idle" && (res.Server.Commits <= 0 || res.Server.WritesPerCommit < 1) || res.Server.DBBytesAfter <= 0 {
		t.Errorf("%s: server metrics %+v", res.Workload, *res.Server)
	}
}

func TestEndToEnd(t *testing.T) {
	url := startServer(t)
	for _, transport := range []string{"sse", "poll"} {
		res := runJSON(t, url, "-workload", "pingpong", "-transport", transport, "-rooms", "4", "-k", "25", "-think", "1ms")
		checkClean(t, res)
		if res.RoundTrips != 100 || res.Messages != 200 || res.RoundTrip.N != 100 || res.MessagesPS <= 0 {
			t.Errorf("pingpong/%s: %d round trips, %d messages (%+v)", transport, res.RoundTrips, res.Messages, res)
		}
		if res.RoundTrip.P50 <= 0 || res.RoundTrip.P50 > res.RoundTrip.P99 || res.RoundTrip.P99 > res.RoundTrip.Max {
			t.Errorf("pingpong/%s: round trip percentiles %+v", transport, res.RoundTrip)
		}
	}

	// SSE receivers acknowledge what arrived, as tincan.js does.
	res := runJSON(t, url, "-workload", "pingpong", "-rooms", "2", "-k", "20", "-think", "10ms", "-ack-every", "20ms")
	checkClean(t, res)
	if res.Acks == 0 || res.Messages != 80 {
		t.Errorf("pingpong with -ack-every 20ms: %d acknowledgements, %d messages", res.Acks, res.Messages)
	}

	// Candidates in one batch per side (the default), and one by one.
	for _, batch := range []string{"-batch=true", "-batch=false"} {
		res = runJSON(t, url, "-workload", "calls", "-rooms", "3", "-count", "6", "-candidates", "5", "-sdp-size", "1000", batch)
		checkClean(t, res)
		// Per call: offer, answer, 5+5 candidates, bye; peer-joined and peer-left.
		if res.Calls != 6 || res.Setup.N != 6 || res.Messages != 6*13 || res.CallsPS <= 0 || res.Batch != (batch == "-batch=true") {
			t.Errorf("calls %s: %d calls, %d messages, setup %+v, batch %v", batch, res.Calls, res.Messages, res.Setup, res.Batch)
		}
	}

	res = runJSON(t, url, "-workload", "idle", "-rooms", "3", "-duration", "500ms", "-settle", "10ms")
	checkClean(t, res)
	if res.Streams != 6 || res.Heartbeats < 6 {
		t.Errorf("idle: %d streams, %d heartbeats", res.Streams, res.Heartbeats)
	}

	res = runJSON(t, url, "-workload", "fill", "-rooms", "3", "-k", "4")
	if res.Errors != 0 || res.Posted != 12 {
		t.Errorf("fill: %d posted, errors %v", res.Posted, res.ErrorKinds)
	}

	// The text report.
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"-url", url, "-rooms", "2", "-k", "3", "-progress", "0"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"messages     12 delivered", "round trip   p50", "lost 0", "writes/commit", "bbolt file"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestServerDown(t *testing.T) {
	srv := httptest.NewServer(nil)
	url := srv.URL
	srv.Close()
	var out bytes.Buffer
	err := Run(context.Background(), []string{"-url", url, "-rooms", "1", "-k", "1", "-timeout", "2s", "-progress", "0"}, &out, io.Discard)
	if err == nil {
		t.Fatal("no error against a server that is not there")
	}
}
