package etcdstore

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tincan/tincan/store"
)

// An instance cut off from etcd while the others go on, and while etcd
// compacts away the revisions its watch had not seen, loads its mirror
// again when it gets back: it knows who joined and who left meanwhile, its
// subscriber is told, and its reader gets every entry once.
func TestWatchBehindCompaction(t *testing.T) {
	prefix := testPrefix(t)
	proxy := newSilentProxy(t, cluster.endpoints[0])
	y := openAt(t, prefix, Options{Options: store.Options{Capacity: 3}})
	x := openAt(t, prefix, Options{Options: store.Options{Capacity: 3}, Endpoints: []string{proxy.endpoint()}})
	a := mustJoin(t, y, "r")
	b := mustJoin(t, x, "r")
	before := mustPost(t, y, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"before"`)}}})
	eventually(t, "x sees the post before the cut", func() bool { return len(mustRead(t, x, b.Member, 0)) == 1 })
	woken := make(chan struct{}, 1)
	defer x.Subscribe(b.Member, func(uint64) {
		select {
		case woken <- struct{}{}:
		default:
		}
	})()

	proxy.setCut(true)
	var posted []uint64
	for i := range 5 {
		posted = append(posted, mustPost(t, y, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"during","i":%d`, i))}}}).ID)
	}
	c := mustJoin(t, y, "r")
	if _, err := y.Leave(ctx0, a.Member, store.ReasonLeft); err != nil {
		t.Fatal(err)
	}
	compactNow(t)
	proxy.setCut(false)

	eventually(t, "x reloads its mirror", func() bool { return testutil.ToFloat64(x.metrics.reloads) >= 1 })
	select {
	case <-woken:
	case <-time.After(20 * time.Second):
		t.Fatal("x's subscriber was not told after the reload")
	}
	if _, ok := x.mirror.lookup(sha256.Sum256([]byte(c.Token))); !ok {
		t.Fatal("x's mirror does not know c, who joined while x was cut off")
	}
	if _, ok := x.mirror.lookup(sha256.Sum256([]byte(a.Token))); ok {
		t.Fatal("x's mirror still knows a, who left while x was cut off")
	}
	var got []uint64
	for _, msg := range mustRead(t, x, b.Member, before.ID) {
		if e := parseEvent(t, msg); e.Type == "during" {
			got = append(got, msg.ID)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(posted) {
		t.Fatalf("b reads %v on x after the reload, want %v", got, posted)
	}
}

// compactNow compacts the shared cluster at its current revision.
func compactNow(t testing.TB) {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: cluster.endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Get(ctx0, "compact")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx0, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
}

// An instance that cannot reach etcd stops authenticating (and reading
// for) a member that left elsewhere once its mirror is StaleAfter old: it
// answers ErrUnavailable, never the stale yes; back in touch, it refuses
// the token for good.
func TestStaleInstanceRefuses(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	proxy := newSilentProxy(t, cluster.endpoints[1])
	y := openAt(t, prefix, Options{})
	const stale = 500 * time.Millisecond
	x := openAt(t, prefix, Options{Endpoints: []string{proxy.endpoint()}, StaleAfter: stale, RequestTimeout: stale})
	a := mustJoin(t, y, "r")
	if _, err := x.Authenticate(ctx0, a.Token); err != nil {
		t.Fatal(err)
	}
	proxy.setCut(true)
	cut := time.Now()
	if _, err := y.Leave(ctx0, a.Member, store.ReasonLeft); err != nil {
		t.Fatal(err)
	}
	time.Sleep(stale - time.Since(cut) + 50*time.Millisecond)
	if m, err := x.Authenticate(ctx0, a.Token); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a stale instance authenticates the member who left elsewhere: %+v, %v; want ErrUnavailable", m, err)
	}
	if _, _, err := x.Read(ctx0, a.Member, store.ReadRequest{Limit: 1}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a stale instance reads: %v; want ErrUnavailable", err)
	}
	if err := x.Ping(ctx0); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a cut-off instance pings: %v; want ErrUnavailable", err)
	}
	var se *store.Error
	if err := x.Ping(ctx0); !errors.As(err, &se) || se.Code != "unavailable" {
		t.Fatalf("errors.As finds %+v in %v; want the code unavailable", se, err)
	}
	proxy.setCut(false)
	eventually(t, "the instance back in touch refuses the token", func() bool {
		_, err := x.Authenticate(ctx0, a.Token)
		return errors.Is(err, store.ErrUnauthorized)
	})
	if err := x.Ping(ctx0); err != nil {
		t.Fatalf("ping once back in touch: %v", err)
	}
}

// An etcd without quorum makes every call that needs it fail with
// ErrUnavailable within the request timeout, not hang and not lie; once a
// quorum is back, the engine works on with everything acknowledged before.
// Then the leader is stopped hard while three instances post with
// Idempotency-Keys (retrying what fails, as clients do) and a reader on
// each follows: every post is delivered once, in order.
func TestQuorumLossAndLeaderStop(t *testing.T) {
	t.Parallel() // on a cluster of its own
	c, err := startCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop) // after the stores' Close (cleanups run last first)
	open := func(endpoints []string, opts store.Options) *Store {
		ctx, cancel := context.WithTimeout(ctx0, 30*time.Second)
		defer cancel()
		s, err := Open(ctx, Options{Options: opts, Endpoints: endpoints, Prefix: "/quorum/", RequestTimeout: time.Second, StaleAfter: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("quorum lost and back", func(t *testing.T) {
		s := open(c.endpoints[:1], store.Options{})
		a, b := mustJoin(t, s, "q"), mustJoin(t, s, "q")
		kept := mustPost(t, s, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"kept"`)}}})
		c.stopMember(1)
		c.stopMember(2)
		start := time.Now()
		if err := s.Ping(ctx0); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("ping without quorum: %v, want ErrUnavailable", err)
		}
		if _, err := s.Append(ctx0, store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("append without quorum: %v, want ErrUnavailable", err)
		}
		if _, err := s.Join(ctx0, store.JoinRequest{Room: "other"}); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("join without quorum: %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("three calls without quorum took %v: they must give up within the request timeout", d)
		}
		for _, i := range []int{1, 2} {
			if err := c.start(i); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "ping once the quorum is back", func() bool { return s.Ping(ctx0) == nil })
		retried := mustPost(t, s, store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
		msgs := mustRead(t, s, b.Member, 0)
		if len(msgs) == 0 || msgs[0].ID != kept.ID || msgs[len(msgs)-1].ID != retried.ID {
			t.Fatalf("b reads %v; want %d first and %d last", idsOf(msgs), kept.ID, retried.ID)
		}
		for _, m := range []store.Member{a.Member, b.Member} {
			if _, err := s.Leave(ctx0, m, store.ReasonLeft); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("leader stopped under load", func(t *testing.T) {
		ss := []*Store{open(c.endpoints, store.Options{Capacity: 3}), open(c.endpoints, store.Options{Capacity: 3}), open(c.endpoints, store.Options{Capacity: 3})}
		var members []store.Joined
		for _, s := range ss {
			members = append(members, mustJoin(t, s, "l"))
		}
		const perWriter = 30
		stopLeader := make(chan struct{})
		var writers, readers sync.WaitGroup
		posted := make([][]uint64, len(ss))
		for w := range ss {
			writers.Go(func() {
				for i := range perWriter {
					if i == perWriter/3 && w == 0 {
						close(stopLeader)
					}
					p := store.Post{From: members[w].Member, IdempotencyKey: fmt.Sprint(i), Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"x","w":%d,"i":%d`, w, i))}}}
					for deadline := time.Now().Add(60 * time.Second); ; {
						r, err := ss[w].Append(ctx0, p)
						if err == nil {
							posted[w] = append(posted[w], r.ID)
							break
						}
						if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
							t.Errorf("writer %d: %v", w, err)
							return
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
			})
		}
		got := make([][]uint64, len(ss))
		done := make(chan struct{})
		for r := range ss {
			readers.Go(func() { got[r] = follow(t, ss[r], members[r].Member, 2*perWriter, done) })
		}
		<-stopLeader
		leader := c.leader()
		if leader < 0 {
			t.Fatal("no leader")
		}
		c.stopMember(leader)
		time.Sleep(time.Second)
		if err := c.start(leader); err != nil {
			t.Fatal(err)
		}
		writers.Wait()
		close(done)
		readers.Wait()
		if t.Failed() {
			t.FailNow()
		}
		for r := range ss {
			var want []uint64
			for w := range ss {
				if w != r {
					want = append(want, posted[w]...)
				}
			}
			slices.Sort(want)
			if fmt.Sprint(got[r]) != fmt.Sprint(want) {
				t.Fatalf("reader %d got %d entries, want the %d posts of the others:\ngot  %v\nwant %v", r, len(got[r]), len(want), got[r], want)
			}
		}
	})
}

// follow reads m's entries as a live reader does until it has want
// messages from members (server events are not counted), or done is closed
// and nothing more comes; it retries reads that find etcd unavailable.
func follow(t *testing.T, s *Store, m store.Member, want int, done <-chan struct{}) []uint64 {
	woken := make(chan struct{}, 1)
	defer s.Subscribe(m, func(uint64) {
		select {
		case woken <- struct{}{}:
		default:
		}
	})()
	var got []uint64
	var after uint64
	for len(got) < want {
		msgs, _, err := s.Read(ctx0, m, store.ReadRequest{After: after, Limit: 16, Acknowledge: true})
		if errors.Is(err, store.ErrUnavailable) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Errorf("read for %s: %v", m.ID, err)
			return got
		}
		for _, msg := range msgs {
			if msg.ID <= after {
				t.Errorf("read for %s: %d after %d", m.ID, msg.ID, after)
				return got
			}
			after = msg.ID
			var e event
			if err := json.Unmarshal(msg.Data, &e); err != nil {
				t.Errorf("read for %s: %s: %v", m.ID, msg.Data, err)
				return got
			}
			if e.From != "" {
				got = append(got, msg.ID)
			}
		}
		if len(msgs) > 0 {
			continue
		}
		select {
		case <-woken:
		case <-time.After(200 * time.Millisecond): // a poll, should a notification be late
		case <-done:
			if more, _, err := s.Read(ctx0, m, store.ReadRequest{After: after, Limit: 1}); err == nil && len(more) == 0 {
				return got
			}
		}
	}
	return got
}
