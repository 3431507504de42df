package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"testing"

	"github.com/tincan/tincan/bench"
)

// TestBenchAgainstFloor runs tincan's own bench against the floor in both
// frame modes: the yardstick must carry the pingpong workload whole (every
// message delivered once), or its figures mean nothing.
func TestBenchAgainstFloor(t *testing.T) {
	for _, viaR3labs := range []bool{false, true} {
		for _, transport := range []string{"sse", "poll"} {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- run(ctx, ln, viaR3labs) }()

			const rooms, k = 4, 50
			var out, errs bytes.Buffer
			err = bench.Run(ctx, []string{"-url", "http://" + ln.Addr().String(), "-rooms", strconv.Itoa(rooms), "-k", strconv.Itoa(k),
				"-transport", transport, "-json", "-progress", "0", "-timeout", "10s"}, &out, &errs)
			cancel()
			if err := <-served; err != nil {
				t.Errorf("floor: %v", err)
			}
			if err != nil {
				t.Fatalf("r3labs=%v %s: bench: %v\n%s", viaR3labs, transport, err, errs.String())
			}
			var r struct{ Messages, Errors, Lost, Duplicates int }
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("bench output %q: %v", out.String(), err)
			}
			if want := rooms * k * 2; r.Messages != want || r.Errors != 0 || r.Lost != 0 || r.Duplicates != 0 {
				t.Errorf("r3labs=%v %s: %+v, want %d messages and no errors, losses or duplicates", viaR3labs, transport, r, want)
			}
		}
	}
}
