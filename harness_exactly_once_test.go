package main

// Receivers that keep reading a room across crashes and restarts of its
// server, and the check that they got every acknowledged message exactly
// once: the promise the end-to-end tests hold the binary to.

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// receiveSSE reads c's event stream after id last (0: from the start),
// reconnecting with Last-Event-ID as EventSource does (to wherever c's
// endpoint points now), until the end message; streams counts the
// connections. Each stream must resume right after the last id; what is
// wrong goes to problem, as this runs in a goroutine.
func receiveSSE(ctx context.Context, c *client, last uint64, streams *atomic.Int64, problem func(string, ...any)) []map[string]any {
	var got []map[string]any
	for ctx.Err() == nil {
		header := []string{}
		if last > 0 {
			header = []string{"Last-Event-ID", fmt.Sprint(last)}
		}
		s, err := c.openEvents(ctx, 1<<16, "", header...)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		streams.Add(1)
		first := true
		for f := range s.frames {
			if f.Comment {
				continue
			}
			if first {
				first = false
				if f.Event != "ready" || f.ID != fmt.Sprint(last) {
					problem("SSE: a stream resumed after %d began with %+v", last, f)
				}
				continue
			}
			m, err := frameMessage(f)
			if err != nil {
				problem("SSE: %v", err)
				continue
			}
			if idOf(m) <= last {
				problem("SSE: id %d after %d (a duplicate or out of order)", idOf(m), last)
			}
			last = idOf(m)
			got = append(got, m)
			if m["type"] == "end" {
				s.close()
				return got
			}
		}
		s.close()
	}
	problem("SSE: no end message before the deadline (last id %d)", last)
	return got
}

// receivePolls long-polls c's messages after since (from wherever c's
// endpoint points now) until the end message; what is wrong goes to
// problem.
func receivePolls(ctx context.Context, c *client, since uint64, problem func(string, ...any)) []map[string]any {
	var got []map[string]any
	for ctx.Err() == nil {
		a, err := c.longPoll(ctx, since, "1")
		if err != nil || a.Status == 503 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		p, err := a.decodePoll()
		if a.Status != 200 || err != nil {
			problem("poll since %d: %d %s", since, a.Status, a.Body)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for _, m := range p.Messages {
			if idOf(m) <= since {
				problem("poll: id %d after %d (a duplicate or out of order)", idOf(m), since)
			}
			since = idOf(m)
			got = append(got, m)
			if m["type"] == "end" {
				return got
			}
		}
		if p.Next != since {
			problem("poll answered next %d after id %d", p.Next, since)
		}
	}
	problem("poll: no end message before the deadline (since %d)", since)
	return got
}

// checkExactlyOnce: got (in delivery order) holds every acknowledged
// message of sender ({"type":"load","k":key}, acked maps key to the id its
// POST was answered) exactly once with that id, and the end message once
// with the id end, and besides the server's peer events nothing else.
func checkExactlyOnce(t testing.TB, who string, got []map[string]any, sender string, acked map[string]uint64, end uint64) {
	t.Helper()
	delivered := map[string]uint64{}
	ends := 0
	for _, m := range got {
		switch {
		case m["from"] == nil && (m["type"] == "peer-joined" || m["type"] == "peer-left"):
		case m["from"] != sender:
			t.Fatalf("%s received %v", who, m)
		case m["type"] == "end":
			ends++
			if idOf(m) != end {
				t.Fatalf("%s: the end message came as id %d, its POST was answered %d", who, idOf(m), end)
			}
		case m["type"] == "load":
			k, _ := m["k"].(string)
			if prev, dup := delivered[k]; dup {
				t.Fatalf("%s received %s twice: ids %d and %d", who, k, prev, idOf(m))
			}
			delivered[k] = idOf(m)
			if want, ok := acked[k]; !ok || want != idOf(m) {
				t.Fatalf("%s received %s as id %d; its POST was answered %d (acknowledged: %v)", who, k, idOf(m), want, ok)
			}
		default:
			t.Fatalf("%s received %v", who, m)
		}
	}
	if ends != 1 {
		t.Fatalf("%s received the end message %d times", who, ends)
	}
	var missing []string
	for k, id := range acked {
		if _, ok := delivered[k]; !ok {
			missing = append(missing, fmt.Sprintf("%s=%d", k, id))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Fatalf("%s never received %d acknowledged messages: %v", who, len(missing), missing[:min(len(missing), 50)])
	}
}
