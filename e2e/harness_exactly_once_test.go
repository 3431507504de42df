package e2e

// Receivers that keep reading a room across crashes and restarts of its
// server, with the Go client's Member.Receive (which resumes after the
// last id by itself), and the check that they got every acknowledged
// message exactly once: the promise the end-to-end tests hold the binary
// to.

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/tincan/tincan/client"
)

// receiveUntilEnd receives m's messages after since over transport until
// the end message; connects counts the streams or long-poll loops that
// began. What is wrong goes to problem, as this runs in a goroutine: a
// message delivered again or out of order (Receive drops it, OnStale says
// it), a delivered message whose id is not the one in its body, an error
// Receive ends with, no end message before ctx is done.
func receiveUntilEnd(ctx context.Context, m *client.Member, transport client.Transport, since uint64, connects *atomic.Int64, problem func(string, ...any)) []map[string]any {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := &client.ReceiveOptions{Transport: transport, Since: since, AckEvery: -1, Hooks: client.Hooks{
		OnConnect: func(client.Transport, uint64) { connects.Add(1) },
		OnStale: func(id, cursor uint64) {
			problem("%v: id %d after %d (a duplicate or out of order)", transport, id, cursor)
		},
	}}
	var got []map[string]any
	for msg, err := range m.Receive(ctx, opts) {
		if err != nil {
			problem("%v: Receive ended: %v", transport, err)
			return got
		}
		var d map[string]any
		if err := decodeNumbers(msg.Data, &d); err != nil || idOf(d) != msg.ID {
			problem("%v: message %d is %s (%v)", transport, msg.ID, msg.Data, err)
		}
		got = append(got, d)
		if d["type"] == "end" {
			return got
		}
	}
	problem("%v: no end message before the deadline (after %d messages)", transport, len(got))
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

// uniqueIDs fails t if one id was answered for two posts (end is the end
// message's).
func uniqueIDs(t testing.TB, acked map[string]uint64, end uint64) {
	t.Helper()
	byID := map[uint64]string{end: "end"}
	for k, id := range acked {
		if other, dup := byID[id]; dup {
			t.Fatalf("id %d was answered for both %s and %s", id, other, k)
		}
		byID[id] = k
	}
}
