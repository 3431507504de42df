package bench

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestJoinsWorkload(t *testing.T) {
	url := startServer(t)
	res := runJSON(t, url, "-workload", "joins", "-rooms", "4", "-count", "40", "-duration", "20s")
	if res.Joins != 40 || res.JoinsPS <= 0 || res.Join.N != 40 || res.Auth != "open" {
		t.Errorf("joins %d (%.1f/s), join latencies %d, auth %q", res.Joins, res.JoinsPS, res.Join.N, res.Auth)
	}
	checkClean(t, res)
}

func TestAppsFlags(t *testing.T) {
	for _, bad := range [][]string{
		{"-workload", "joins", "-jwt", "rs256"},
		{"-workload", "joins", "-jwt", "es256"},
		{"-workload", "calls", "-jwt", "hs256", "-jwt-secret", "x"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestHookReceiver(t *testing.T) {
	h, err := startHookReceiver("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	ts := time.Now().Add(-20 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	srv := "http://" + h.addr() + "/hooks"
	for _, id := range []string{"msg_1", "msg_2", "msg_1"} {
		req, _ := http.NewRequest("POST", srv, bytes.NewReader([]byte(`{"type":"room.created","timestamp":"`+ts+`","data":{}}`)))
		req.Header.Set("webhook-id", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	resp, err := http.Post(srv, "application/json", strings.NewReader(`nope`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h.n.Load() != 4 || h.dups.Load() != 1 || h.bad.Load() != 1 {
		t.Errorf("received %d, dups %d, bad %d", h.n.Load(), h.dups.Load(), h.bad.Load())
	}
	if l := h.lag.summary(); l.N != 3 || l.P50 < 20 {
		t.Errorf("lag %+v", l)
	}
	m0 := metrics{}
	m1 := metrics{`x_bucket{le="0.01"}`: 50, `x_bucket{le="0.1"}`: 99, `x_bucket{le="1"}`: 100, `x_bucket{le="+Inf"}`: 100}
	if q := histQuantile(m0, m1, "x", 0.5); q != 0.01 {
		t.Errorf("p50 bound %g", q)
	}
	if q := histQuantile(m0, m1, "x", 0.99); q != 0.1 {
		t.Errorf("p99 bound %g", q)
	}
}
