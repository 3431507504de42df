package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// postBatch posts body (a JSON array) and returns the ids of the 201
// answer, failing t otherwise.
func (c *client) postBatch(t testing.TB, body string, header ...string) []uint64 {
	t.Helper()
	a := c.ep.do(t, "POST", "/rooms/"+c.Room+"/messages", body, append(c.auth(), header...)...)
	if a.Status != 201 {
		t.Fatalf("batch post %s: status %d: %s", body, a.Status, a.Body)
	}
	var ans struct{ IDs []uint64 }
	if err := json.Unmarshal(a.Body, &ans); err != nil {
		t.Fatalf("batch post answered %s: %v", a.Body, err)
	}
	return ans.IDs
}

// A batch POST: one answer with every id, in order; each message delivered
// as its own frame and its own poll element, exactly as the same messages
// posted one by one; a retry with the Idempotency-Key gets the same ids.
func TestBatchPost(t *testing.T) {
	srv := newTestServer(t, withFlags("-room-capacity", "3"))
	a, b, c := srv.join(t, "batch", 201), srv.join(t, "batch", 201), srv.join(t, "batch", 201)
	bStream := b.events(t, "")
	bStream.ready(t)

	elements := []string{
		`{"type":"candidate","candidate":"candidate:1 1 udp 1 192.0.2.1 1 typ host","sdpMid":"0"}`,
		`{"type":"candidate","candidate":"candidate:2 1 udp 1 192.0.2.1 2 typ host","to":"` + b.ClientID + `"}`,
		`{"type":"candidate","candidate":null}`,
	}
	var ids, single []uint64
	phase(t, "a batch answers every id, in order", func(t *testing.T) {
		ids = a.postBatch(t, "["+strings.Join(elements, ",")+"]", "Idempotency-Key", "burst-1")
		if len(ids) != 3 || !slices.IsSorted(ids) || ids[0] == ids[1] || ids[1] == ids[2] {
			t.Fatalf("ids %v: want 3, strictly increasing", ids)
		}
	})
	phase(t, "the same messages posted one by one, for comparison", func(t *testing.T) {
		for _, el := range elements {
			single = append(single, a.post(t, el))
		}
	})

	phase(t, "SSE: each message of the batch is its own frame, as if posted alone", func(t *testing.T) {
		var got []map[string]any
		for len(got) < 6 {
			if m := bStream.message(t); m["type"] == "candidate" { // not c's peer-joined
				got = append(got, m)
			}
		}
		for i := range 3 {
			batched, alone := got[i], got[3+i]
			if idOf(batched) != ids[i] || idOf(alone) != single[i] {
				t.Fatalf("frame %d: ids %v and %v, want %d and %d", i, batched["id"], alone["id"], ids[i], single[i])
			}
			delete(batched, "id")
			delete(alone, "id")
			if fmt.Sprint(batched) != fmt.Sprint(alone) {
				t.Errorf("message %d batched %v, alone %v", i, batched, alone)
			}
		}
	})

	phase(t, "long-poll: each message is its own element; c gets those to everyone", func(t *testing.T) {
		p := c.poll(t, 0, "0")
		var got []uint64
		for _, m := range p.Messages {
			if m["type"] == "candidate" {
				got = append(got, idOf(m))
			}
		}
		want := []uint64{ids[0], ids[2], single[0], single[2]}
		if !slices.Equal(got, want) {
			t.Fatalf("c polls candidates %v, want %v (the second of each run was to b)", got, want)
		}
	})

	phase(t, "a retry of the batch gets its ids and stores nothing, whatever it carries", func(t *testing.T) {
		again := a.postBatch(t, "["+strings.Join(elements, ",")+"]", "Idempotency-Key", "burst-1")
		if !slices.Equal(again, ids) {
			t.Fatalf("retry answered %v, want %v", again, ids)
		}
		if other := a.postBatch(t, "["+strings.Join(append(elements, `{"type":"more"}`), ",")+"]", "Idempotency-Key", "burst-1"); !slices.Equal(other, ids) {
			t.Fatalf("a retry with another body answered %v, want %v", other, ids)
		}
		if f, ok := bStream.nextWithin(300 * time.Millisecond); ok {
			t.Fatalf("the retry delivered %+v", f)
		}
	})

	phase(t, "a bad element refuses the whole batch, naming its index; nothing is stored", func(t *testing.T) {
		for _, tc := range []struct {
			body, code, detail string
			status, index      int // index -1: none
		}{
			{`[{"type":"x"},{"type":"offer","sdp":"no"},{"type":"y"}]`, "bad_message", "message 1", 400, 1},
			{`[{"type":"x"},{"type":"x","to":"nobody"}]`, "unknown_peer", "message 1", 404, 1},
			{`[{"type":"x"},1]`, "bad_message", "message 1", 400, 1},
			{`[]`, "bad_message", "at least one", 400, -1},
			{"[" + strings.Repeat(`{"type":"x"},`, 64) + `{"type":"x"}]`, "bad_message", "at most 64", 400, -1},
		} {
			ans := a.ep.do(t, "POST", "/rooms/batch/messages", tc.body, a.auth()...)
			var p struct {
				Code, Detail string
				Index        *int
			}
			json.Unmarshal(ans.Body, &p)
			index := -1
			if p.Index != nil {
				index = *p.Index
			}
			if ans.Status != tc.status || p.Code != tc.code || !strings.Contains(p.Detail, tc.detail) || index != tc.index {
				t.Errorf("post %.60s: %d %s; want %d %s naming %q, index %d", tc.body, ans.Status, ans.Body, tc.status, tc.code, tc.detail, tc.index)
			}
		}
		if p := b.poll(t, single[2], "0"); len(p.Messages) != 0 {
			t.Fatalf("refused batches left %v", p.Messages)
		}
		if f, ok := bStream.nextWithin(300 * time.Millisecond); ok {
			t.Fatalf("a refused batch delivered %+v", f)
		}
	})
}
