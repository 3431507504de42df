package etcdstore

import (
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// The client path between an instance and the member its lease renewals
// go to falls silent (nothing forwarded, nothing closed), and so does a
// second one: the renewals move to the member that answers, and a member
// held on that instance does not time out. Before, the renewals' stream
// stayed on the silent member until gRPC keepalive gave up (~15 s), and
// members with a shorter client timeout were removed as timed out (the
// fault suite's StopLeader, with its 10 s client timeout).
func TestSilentKeepAlive(t *testing.T) {
	t.Parallel()
	opts := store.Options{Capacity: 3, ClientTimeout: 5 * time.Second}
	ps, eps, x, y := silentPair(t, opts)
	a := mustJoin(t, x, "k")
	defer x.Hold(a.Member)()

	var ka *keepAlive
	eventually(t, "x renews leases on a stream", func() bool { ka = x.presence.stream.Load(); return ka != nil && ka.node != nil })
	silent := 0
	for i, ep := range eps {
		if ep == ka.node.url {
			silent = i
		}
	}
	second := (silent + 1) % len(ps)
	ps[silent].silence()
	ps[second].silence()
	defer ps[silent].resume()
	defer ps[second].resume()

	time.Sleep(3 * opts.ClientTimeout)
	if n, err := y.Occupants(ctx0, "k"); err != nil || n != 1 {
		t.Fatalf("after %v with x's renewals' member silent: %d in the room (%v), want the held member", 3*opts.ClientTimeout, n, err)
	}
	if now := x.presence.stream.Load(); now == ka || now.node.url == eps[silent] {
		t.Fatal("x still renews on the silent member")
	}
}
