package etcdstore

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// An instance that restarts while another runs changes nothing for the
// members; when every instance restarts, everybody gets one shared lease
// of the whole client timeout, a member then seen moves to a lease of its
// own, and the members never seen again go when the shared lease lapses.
func TestRestartOfSomeOrAllInstances(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	long := Options{Options: store.Options{ClientTimeout: time.Hour}}
	x, y := openAt(t, prefix, long), openAt(t, prefix, long)
	a, b := mustJoin(t, x, "r"), mustJoin(t, x, "r")
	lease := func(s *Store, m store.Member) memberRef {
		t.Helper()
		ref, ok := s.mirror.presence(m)
		if !ok {
			t.Fatalf("%s is not a member", m.ID)
		}
		return ref
	}

	y.Close()
	y = openAt(t, prefix, long)
	for _, m := range []store.Member{a.Member, b.Member} {
		eventually(t, "the restarted instance knows "+m.ID, func() bool { _, ok := y.mirror.presence(m); return ok })
		if ref := lease(y, m); !ref.live || ref.shared || ref.lease != lease(x, m).lease {
			t.Fatalf("after one instance's restart %s has lease %+v, want its own from before", m.ID, ref)
		}
	}

	x.Close()
	y.Close()
	short := Options{Options: store.Options{ClientTimeout: time.Second}}
	z := openAt(t, prefix, short)
	for _, m := range []store.Member{a.Member, b.Member} {
		if ref := lease(z, m); !ref.live || !ref.shared {
			t.Fatalf("after every instance restarted %s has lease %+v, want the shared one", m.ID, ref)
		}
	}
	defer z.Hold(a.Member)()
	eventually(t, "a, seen, moves to a lease of its own", func() bool { return !lease(z, a.Member).shared })
	eventually(t, "b, silent since the restart, is removed", func() bool {
		_, err := z.Authenticate(ctx0, b.Token)
		return errors.Is(err, store.ErrUnauthorized)
	})
	if _, err := z.Authenticate(ctx0, a.Token); err != nil {
		t.Fatalf("a, held since the restart: %v", err)
	}
}

// After a restart of every instance, the members nobody sees lapse
// together with the shared lease: two instances remove them all, each
// once, while the ones held stay.
func TestMassLapseAfterRestart(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	const rooms = 40
	long := Options{Options: store.Options{Capacity: 3, ClientTimeout: time.Hour}}
	first := openAt(t, prefix, long)
	held := make([]store.Joined, rooms)
	var wg sync.WaitGroup
	for r := range rooms {
		wg.Go(func() {
			room := fmt.Sprint("r", r)
			for i := range 3 {
				j, err := first.Join(ctx0, store.JoinRequest{Room: room})
				if err != nil {
					t.Error(err)
					return
				}
				if i == 0 {
					held[r] = j
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	first.Close()

	short := Options{Options: store.Options{Capacity: 3, ClientTimeout: 5 * time.Second}}
	x := openAt(t, prefix, short) // gives everybody the shared lease
	y := openAt(t, prefix, short)
	for r, j := range held {
		defer []*Store{x, y}[r%2].Hold(j.Member)()
	}
	for r, j := range held {
		room := fmt.Sprint("r", r)
		eventually(t, "the silent members of "+room+" are removed", func() bool {
			n, _ := x.Occupants(ctx0, room)
			return n == 1
		})
		var lefts int
		for _, msg := range mustRead(t, x, j.Member, 0) { // x shows both removals: it counted one occupant
			if e := parseEvent(t, msg); e.Type == "peer-left" {
				if e.Reason != "timeout" {
					t.Fatalf("%s reads %s", room, msg.Data)
				}
				lefts++
			}
		}
		if lefts != 2 {
			t.Fatalf("the member held in %s was told of %d timeouts, want 2", room, lefts)
		}
	}
}
