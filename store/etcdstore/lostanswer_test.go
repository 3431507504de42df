package etcdstore

import (
	"slices"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// A join whose attempt was applied but whose answer was lost (a leader
// killed while the call waited: the fault suite's "ghost" member) is
// answered as joined when it tries again: the member in the room is its
// own, and it takes no second seat nor is refused as if the room were full.
func TestJoinAppliedAnswerLost(t *testing.T) {
	t.Parallel()
	s := openAt(t, testPrefix(t), Options{Options: store.Options{Capacity: 2}})
	a := mustJoin(t, s, "r")

	j := &joining{s: s, req: store.JoinRequest{Room: "r"}, deadline: time.Now().Add(s.opts.RequestTimeout)}
	defer j.release()
	v := s.mirror.view("r")
	refusal, slot, err := j.check(v)
	if refusal != nil || err != nil {
		t.Fatalf("check: %v, %v", refusal, err)
	}
	first, done, err := j.admit(ctx0, v, slot)
	if err != nil || !done {
		t.Fatalf("first attempt: done %v, %v", done, err)
	}
	// Its answer is lost; the room is full now (capacity 2). The join tries again.
	again, err := j.run(ctx0)
	if err != nil {
		t.Fatalf("the attempt after an applied one: %v, want the member it made", err)
	}
	if again.Member != first.Member || again.Token != first.Token || !slices.Equal(again.Peers, []string{a.Member.ID}) {
		t.Fatalf("answered %+v, want member %v with token %.6s… and peer %s", again, first.Member, first.Token, a.Member.ID)
	}
	if n, err := s.Occupants(ctx0, "r"); err != nil || n != 2 {
		t.Fatalf("occupants %d (%v), want 2: one seat for the join", n, err)
	}
}
