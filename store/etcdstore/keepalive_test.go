package etcdstore

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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

// etcd revokes the lease of a member held on instance x (as a leader
// stopped with SIGSTOP does when it resumes: it revokes what expired by
// its clock, and the new leader applies it; the fault suite's StopLeader
// found it). x gives the member a lease again before y's reaper removes
// it: y waits lapseGrace after seeing the live key go. Before, y removed
// the member at once, with peer-left (timeout) to the others, while its
// stream was open on x.
func TestLeaseRevokedUnderHeldMember(t *testing.T) {
	t.Parallel()
	opts := store.Options{Capacity: 3, ClientTimeout: 4 * time.Second}
	ss := openN(t, 2, opts)
	x, y := ss[0], ss[1]
	a := mustJoin(t, x, "r")
	b := mustJoin(t, y, "r")
	defer x.Hold(a.Member)()
	defer y.Hold(b.Member)()

	for round := range 3 { // a lease given again can be revoked again
		ref, _ := x.mirror.presence(a.Member)
		if !ref.live || ref.lease == 0 {
			t.Fatalf("round %d: a has no live key on its own lease: %+v", round, ref)
		}
		if _, err := x.client.Revoke(ctx0, clientv3.LeaseID(ref.lease)); err != nil {
			t.Fatal(err)
		}
		// Both mirrors: the next round reads x's, which may see the new
		// key after y's does.
		eventually(t, "a has a live key on a new lease", func() bool {
			for _, s := range ss {
				if now, _ := s.mirror.presence(a.Member); !now.live || now.lease == 0 || now.lease == ref.lease {
					return false
				}
			}
			return true
		})
	}
	time.Sleep(2 * opts.ClientTimeout) // the new lease is renewed too
	if _, err := y.Authenticate(ctx0, a.Token); err != nil {
		t.Fatalf("a, held on x, was removed after etcd revoked its lease: %v", err)
	}
	for _, msg := range mustRead(t, y, b.Member, 0) {
		if e := parseEvent(t, msg); e.Type == "peer-left" {
			t.Fatalf("b was told %+v", e)
		}
	}
}

// etcd revokes the leases waiting in an instance's pool (as a leader
// resumed after SIGSTOP does with those expired by its clock). Joins that
// take them, and the posts that share their groups, still succeed: etcd
// refuses such a group whole and unapplied, each join takes another lease
// and every write is sent again. Before, each of them failed with
// "requested lease not found".
func TestPooledLeaseRevoked(t *testing.T) {
	t.Parallel()
	x := openN(t, 1, store.Options{Capacity: 50, ClientTimeout: 10 * time.Second})[0]
	a := mustJoin(t, x, "r")
	eventually(t, "the pool fills", func() bool { return len(x.presence.pool) == cap(x.presence.pool) })
	var pooled []pooledLease
	for len(x.presence.pool) > 0 {
		pooled = append(pooled, <-x.presence.pool)
	}
	for _, l := range pooled {
		if _, err := x.client.Revoke(ctx0, l.id); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range pooled {
		x.presence.pool <- l
	}
	errs := make(chan error, 40)
	for i := range 20 {
		go func() {
			_, err := x.Join(ctx0, store.JoinRequest{Room: "r"})
			errs <- err
		}()
		go func() {
			_, err := x.Append(ctx0, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"t","i":%d`, i))}}})
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Fatalf("a join or post with the pool's leases revoked: %v", err)
		}
	}
	if n, err := x.Occupants(ctx0, "r"); err != nil || n != 21 {
		t.Fatalf("%d in the room (%v), want 21", n, err)
	}
}
