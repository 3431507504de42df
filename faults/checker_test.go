package faults

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// goodHistory is a small history that keeps every promise: poster P and
// reader R in room r, member M that joins and leaves, silent member S
// that times out.
func goodHistory() *History {
	s := time.Second
	h := NewHistory(4, 1000, 10*time.Second)
	h.Joins = []Join{
		{Room: "r", ClientID: "P", Start: 0, End: s / 10, Outcome: OK, Occupants: 1, Capacity: 4},
		{Room: "r", ClientID: "R", Start: s / 10, End: s / 5, Outcome: OK, Occupants: 2, Capacity: 4},
		{Room: "r", ClientID: "M", Start: 4 * s, End: 4*s + s/10, Outcome: OK, Occupants: 3, Capacity: 4},
		{Room: "r", ClientID: "S", Start: 5 * s, End: 5*s + s/10, Outcome: OK, Occupants: 3, Capacity: 4, Silent: true},
		{Room: "r", Start: 5 * s, End: 5*s + s/10, Outcome: Refused, Code: "room_full"},
	}
	h.Posts = []Post{
		{Room: "r", Sender: "P", Key: "k1", Start: 1 * s, End: 2 * s, Outcome: OK, ID: 10},
		{Room: "r", Sender: "P", Key: "k2", Start: 3 * s, End: 4 * s, Outcome: OK, ID: 20},
		{Room: "r", Sender: "P", Key: "k3", Start: 3 * s, End: 9 * s, Outcome: Unknown},
	}
	h.Leaves = []Leave{{Room: "r", ClientID: "M", Start: 6 * s, End: 6*s + s/10, Outcome: OK}}
	h.Deliveries = []Delivery{
		{Room: "r", Reader: "R", ID: 10, Type: "load", From: "P", Key: "k1", At: 2*s + s/10},
		{Room: "r", Reader: "R", ID: 20, Type: "load", From: "P", Key: "k2", At: 4*s + s/5},
		{Room: "r", Reader: "R", ID: 22, Type: "peer-joined", Peer: "M", At: 4*s + s/5},
		{Room: "r", Reader: "R", ID: 23, Type: "peer-joined", Peer: "S", At: 5*s + s/5},
		{Room: "r", Reader: "R", ID: 25, Type: "peer-left", Peer: "M", Reason: "left", At: 6*s + s/5},
		{Room: "r", Reader: "R", ID: 27, Type: "peer-left", Peer: "S", Reason: "timeout", At: 12 * s},
		{Room: "r", Reader: "R", ID: 30, Type: "end", From: "P", At: 13 * s},
	}
	h.Readers = []Reader{{Room: "r", ClientID: "R", Joined: s / 5, Drained: true}}
	h.Webhooks = []Webhook{
		{ID: "w1", Type: "member.joined", Room: "r", ClientID: "P", Seq: 1},
		{ID: "w2", Type: "member.joined", Room: "r", ClientID: "R", Seq: 2},
		{ID: "w3", Type: "member.joined", Room: "r", ClientID: "M", Seq: 3},
		{ID: "w4", Type: "member.joined", Room: "r", ClientID: "S", Seq: 4},
		{ID: "w5", Type: "member.left", Room: "r", ClientID: "M", Reason: "left", Seq: 5},
		{ID: "w6", Type: "member.left", Room: "r", ClientID: "S", Reason: "timeout", Seq: 6},
	}
	h.Retained = []Retained{{Room: "cap", Count: 1000}}
	return h
}

func TestCheckGoodHistory(t *testing.T) {
	vs, fig := Check(goodHistory())
	if len(vs) > 0 {
		t.Fatalf("violations in a good history:\n%s", Summary(vs, 20))
	}
	want := Figures{Acked: 2, Delivered: 2, WatchStall: 200 * time.Millisecond, P99Post: time.Second, MaxPost: time.Second, P99Fault: time.Second, Joins: 4, Refused: 1, Departures: 2, Webhooks: 6}
	if fig != want {
		t.Fatalf("figures %+v, want %+v", fig, want)
	}
}

// TestCheckCatches feeds the checker histories that each break one
// promise and expects it to say which.
func TestCheckPercentiles(t *testing.T) {
	h := NewHistory(4, 0, time.Second)
	for i := range 200 {
		h.Posts = append(h.Posts, Post{Room: "r", Sender: "P", Key: fmt.Sprint(i), Start: time.Duration(i) * time.Second,
			End: time.Duration(i)*time.Second + time.Duration(i%100+1)*time.Millisecond, Outcome: OK, ID: uint64(i + 1)})
	}
	h.FaultFrom, h.FaultTo = 100*time.Second, 109*time.Second // posts 100-109: 1-10 ms
	_, fig := Check(h)
	if fig.P99Post != 99*time.Millisecond || fig.MaxPost != 100*time.Millisecond || fig.P99Fault != 10*time.Millisecond {
		t.Fatalf("p99 %v, max %v, p99 during the fault %v; want 99ms, 100ms, 10ms", fig.P99Post, fig.MaxPost, fig.P99Fault)
	}
}

func TestCheckCatches(t *testing.T) {
	s := time.Second
	deliver := func(h *History, d Delivery) {
		h.Deliveries = append(h.Deliveries, d)
	}
	drop := func(h *History, id uint64) {
		h.Deliveries = slices.DeleteFunc(h.Deliveries, func(d Delivery) bool { return d.ID == id })
	}
	for _, c := range []struct {
		name   string
		kind   string
		figure func(Figures) bool
		break_ func(h *History)
	}{
		{"an acknowledged message never delivered", "lost", func(f Figures) bool { return f.Lost == 1 },
			func(h *History) { drop(h, 20) }},
		{"a message delivered under another key", "lost", nil,
			func(h *History) { h.Deliveries[1].Key = "k1" }},
		{"a reader that never reached the end", "reader", nil,
			func(h *History) { h.Readers[0].Drained, h.Readers[0].Err = false, "unauthorized" }},
		{"a message delivered twice", "duplicated", func(f Figures) bool { return f.Duplicated == 1 },
			func(h *History) { deliver(h, h.Deliveries[0]) }},
		{"a message stored twice", "duplicated", nil,
			func(h *History) {
				deliver(h, Delivery{Room: "r", Reader: "R", ID: 40, Type: "load", From: "P", Key: "k1", At: 14 * s})
			}},
		{"a message delivered with another id than answered", "duplicated", nil,
			func(h *History) { h.Deliveries[0].ID = 11 }},
		{"a repeat the client dropped", "duplicated", nil,
			func(h *History) { h.Stale = []Stale{{Room: "r", Reader: "R", ID: 20, Cursor: 20}} }},
		{"messages out of order", "order", nil,
			func(h *History) { h.Deliveries[0], h.Deliveries[1] = h.Deliveries[1], h.Deliveries[0] }},
		{"an old message the client dropped", "order", nil,
			func(h *History) { h.Stale = []Stale{{Room: "r", Reader: "R", ID: 10, Cursor: 20}} }},
		{"a message nobody posted", "invented", nil,
			func(h *History) {
				deliver(h, Delivery{Room: "r", Reader: "R", ID: 40, Type: "load", From: "P", Key: "kX", At: 14 * s})
			}},
		{"a message from another sender", "invented", nil,
			func(h *History) { h.Deliveries[0].From = "M" }},
		{"a refused post delivered", "invented", nil,
			func(h *History) {
				h.Posts[2].Outcome, h.Posts[2].Code = Refused, "bad_message"
				deliver(h, Delivery{Room: "r", Reader: "R", ID: 40, Type: "load", From: "P", Key: "k3", At: 14 * s})
			}},
		{"ids going backwards in real time", "ids", nil,
			func(h *History) { h.Posts[1].ID = 5; h.Deliveries[1].ID = 5 }},
		{"two posts answered one id", "ids", nil,
			func(h *History) {
				h.Posts = append(h.Posts, Post{Room: "r", Sender: "P", Key: "k4", Start: 1 * s, End: 2 * s, Outcome: OK, ID: 10})
			}},
		{"a join answered past capacity", "capacity", nil,
			func(h *History) { h.Joins[2].Occupants = 5 }},
		{"more members at once than the capacity", "capacity", nil,
			func(h *History) {
				for _, id := range []string{"A", "B"} {
					h.Joins = append(h.Joins, Join{Room: "r", ClientID: id, Start: 4 * s, End: 4*s + s/5, Outcome: OK, Occupants: 4, Capacity: 4})
					h.Webhooks = append(h.Webhooks, Webhook{ID: id, Type: "member.joined", Room: "r", ClientID: id, Seq: 100})
				}
				h.Readers[0].Drained = false // A and B's peer-left are not the point
			}},
		{"a resume by token answered as a new member", "resume", nil,
			func(h *History) {
				h.Joins = append(h.Joins, Join{Room: "r", ClientID: "N", ResumeOf: "P", Start: 7 * s, End: 7 * s, Outcome: OK, Occupants: 4, Capacity: 4})
				h.Webhooks = append(h.Webhooks, Webhook{ID: "w7", Type: "member.joined", Room: "r", ClientID: "N", Seq: 7})
			}},
		{"a room past -max-room-messages", "max-room-messages", nil,
			func(h *History) { h.Retained[0].Count = 1001 }},
		{"a departure without peer-left", "peer-left", nil,
			func(h *History) { drop(h, 25) }},
		{"a timeout without peer-left", "peer-left", nil,
			func(h *History) { drop(h, 27) }},
		{"two peer-left for one departure", "peer-left", nil,
			func(h *History) {
				deliver(h, Delivery{Room: "r", Reader: "R", ID: 26, Type: "peer-left", Peer: "M", Reason: "left", At: 7 * s})
			}},
		{"peer-left for a member still there", "peer-left", nil,
			func(h *History) {
				deliver(h, Delivery{Room: "r", Reader: "R", ID: 26, Type: "peer-left", Peer: "P", Reason: "timeout", At: 7 * s})
			}},
		{"peer-left with the wrong reason", "peer-left", nil,
			func(h *History) { h.Deliveries[4].Reason = "timeout" }},
		{"peer-left for a member nobody joined", "peer-left", nil,
			func(h *History) {
				deliver(h, Delivery{Room: "r", Reader: "R", ID: 26, Type: "peer-left", Peer: "Z", Reason: "timeout", At: 7 * s})
			}},
		{"peer-joined for a member nobody joined", "ghost", nil,
			func(h *History) {
				deliver(h, Delivery{Room: "r", Reader: "R", ID: 26, Type: "peer-joined", Peer: "Z", At: 7 * s})
			}},
		{"a join's webhook missing", "webhook", nil,
			func(h *History) { h.Webhooks = slices.Delete(h.Webhooks, 2, 3) }},
		{"a leave's webhook missing", "webhook", nil,
			func(h *History) { h.Webhooks = slices.Delete(h.Webhooks, 4, 5) }},
		{"a timeout's webhook missing", "webhook", nil,
			func(h *History) { h.Webhooks = slices.Delete(h.Webhooks, 5, 6) }},
		{"a leave answered 204 whose webhook says timeout", "webhook", nil,
			func(h *History) { h.Webhooks[4].Reason = "timeout" }},
		{"a member gone before its leave without peer-left", "peer-left", nil,
			func(h *History) {
				h.Joins = append(h.Joins, Join{Room: "r", ClientID: "G", Start: 7 * s, End: 7 * s, Outcome: OK, Occupants: 3, Capacity: 4})
				h.Leaves = append(h.Leaves, Leave{Room: "r", ClientID: "G", Start: 9 * s, End: 9 * s, Outcome: Refused})
				h.Webhooks = append(h.Webhooks,
					Webhook{ID: "w7", Type: "member.joined", Room: "r", ClientID: "G", Seq: 7},
					Webhook{ID: "w8", Type: "member.left", Room: "r", ClientID: "G", Reason: "timeout", Seq: 8})
			}},
		{"webhooks out of room order", "webhook", nil,
			func(h *History) { h.Webhooks[3], h.Webhooks[4] = h.Webhooks[4], h.Webhooks[3] }},
		{"a webhook for a join that did not happen", "ghost", nil,
			func(h *History) {
				h.Webhooks = append(h.Webhooks, Webhook{ID: "w7", Type: "member.joined", Room: "r", ClientID: "Z", Seq: 7})
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := goodHistory()
			c.break_(h)
			vs, fig := Check(h)
			var kinds []string
			found := false
			for _, v := range vs {
				kinds = append(kinds, v.Kind)
				found = found || v.Kind == c.kind
			}
			if !found {
				t.Fatalf("want a %q violation, got %v:\n%s", c.kind, kinds, Summary(vs, 10))
			}
			if c.figure != nil && !c.figure(fig) {
				t.Fatalf("figures %v", fig)
			}
			if fig.Violations != len(vs) {
				t.Fatalf("figures count %d violations, %d returned", fig.Violations, len(vs))
			}
			t.Logf("%s", strings.TrimSpace(Summary(vs, 3)))
		})
	}
}

// An unknown outcome excuses what it may have done: a join whose answer
// was lost may have taken a seat that later times out.
func TestCheckUnknownOutcomes(t *testing.T) {
	s := time.Second
	h := goodHistory()
	h.Joins = append(h.Joins, Join{Room: "r", Start: 7 * s, End: 8 * s, Outcome: Unknown})
	h.Deliveries = append(h.Deliveries,
		Delivery{Room: "r", Reader: "R", ID: 28, Type: "peer-left", Peer: "Z", Reason: "timeout", At: 12 * s})
	h.Webhooks = append(h.Webhooks, Webhook{ID: "w7", Type: "member.joined", Room: "r", ClientID: "Z", Seq: 7})
	// A member removed at its timeout before its leave (answered 401).
	h.Joins = append(h.Joins, Join{Room: "r", ClientID: "G", Start: 7 * s, End: 7 * s, Outcome: OK, Occupants: 3, Capacity: 4})
	h.Leaves = append(h.Leaves, Leave{Room: "r", ClientID: "G", Start: 9 * s, End: 9 * s, Outcome: Refused})
	h.Deliveries = append(h.Deliveries, Delivery{Room: "r", Reader: "R", ID: 24, Type: "peer-left", Peer: "G", Reason: "timeout", At: 8 * s})
	h.Webhooks = append(h.Webhooks,
		Webhook{ID: "w8", Type: "member.joined", Room: "r", ClientID: "G", Seq: 8},
		Webhook{ID: "w9", Type: "member.left", Room: "r", ClientID: "G", Reason: "timeout", Seq: 9})
	// The post of unknown outcome stored after all.
	h.Deliveries = append(h.Deliveries, Delivery{Room: "r", Reader: "R", ID: 29, Type: "load", From: "P", Key: "k3", At: 12 * s})
	slices.SortFunc(h.Deliveries, func(a, b Delivery) int { return int(a.ID) - int(b.ID) })
	if vs, _ := Check(h); len(vs) > 0 {
		t.Fatalf("violations:\n%s", Summary(vs, 20))
	}
}
