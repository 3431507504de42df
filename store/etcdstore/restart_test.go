package etcdstore

import (
	"errors"
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
