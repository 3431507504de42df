package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/tincan/tincan/store"
)

// Posts racing on two instances into one room with MaxRoomMessages:
// exactly the limit is stored, never one more (the limit is decided
// inside each transaction), every racer stops only when told the room
// is full, and the reader gets every stored post once, in id order.
func TestGroupCommitLimitExactAcrossInstances(t *testing.T) {
	t.Parallel()
	const limit, racers = 150, 24
	ss := openN(t, 2, store.Options{MaxRoomMessages: limit, ClientTimeout: time.Hour})
	a := mustJoin(t, ss[0], "r") // a's peer-joined event will be the room's first entry
	b := mustJoin(t, ss[1], "r")
	var stored atomic.Int64
	var mu sync.Mutex
	var ids []uint64
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			s, from := ss[i%2], a.Member
			if i%4 >= 2 {
				from = b.Member
			}
			for n := 0; ; n++ {
				got, err := s.Append(ctx0, store.Post{From: from, Messages: []store.Draft{{Fields: fmt.Appendf(nil, `"type":"x","r":%d,"n":%d`, i, n)}}})
				if errors.Is(err, store.ErrTooManyMessages) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				stored.Add(1)
				mu.Lock()
				ids = append(ids, got.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := stored.Load(); got != limit-1 {
		t.Fatalf("%d posts stored; want exactly %d (the limit %d, less a's peer-joined event)", got, limit-1, limit)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
		t.Fatal("two posts got one id")
	}
	for _, s := range ss {
		n := len(mustRead(t, s, a.Member, 0)) + len(mustRead(t, s, b.Member, 0))
		if n != limit {
			t.Fatalf("the members read %d entries on one instance; want %d", n, limit)
		}
		for _, m := range []store.Member{a.Member, b.Member} {
			got := idsOf(mustRead(t, s, m, 0))
			if !slices.IsSorted(got) {
				t.Fatalf("%s reads ids out of order: %v", m.ID, got)
			}
		}
	}
}

// Posts in flight together on one instance share transactions, each
// with its own outcome: a post refused (a peer that is not there), a
// repeated idempotency key and plain posts, all at once in many rooms,
// each get their own answer, and every stored post is read once.
func TestGroupCommitSharesTransactions(t *testing.T) {
	t.Parallel()
	const rooms, rounds = 40, 8
	s := openN(t, 1, store.Options{ClientTimeout: time.Hour})[0]
	type pair struct{ a, b store.Joined }
	pairs := make([]pair, rooms)
	for i := range pairs {
		room := fmt.Sprintf("r%d", i)
		pairs[i] = pair{mustJoin(t, s, room), mustJoin(t, s, room)}
	}
	var mu sync.Mutex
	revisions := map[int64]int{} // posts per revision
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Go(func() {
			for n := range rounds {
				key := fmt.Sprintf("k%d", n)
				first, err := s.Append(ctx0, store.Post{From: p.a.Member, IdempotencyKey: key, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}, {To: p.b.ID, Fields: []byte(`"type":"y"`)}}})
				if err != nil || first.Repeat || len(first.IDs) != 2 || first.IDs[1] <= first.IDs[0] {
					t.Errorf("room %d post %d: %+v, %v", i, n, first, err)
					return
				}
				again, err := s.Append(ctx0, store.Post{From: p.a.Member, IdempotencyKey: key, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
				if err != nil || !again.Repeat || !slices.Equal(again.IDs, first.IDs) {
					t.Errorf("room %d repeat %d: %+v, %v; want the ids %v", i, n, again, err, first.IDs)
					return
				}
				if _, err := s.Append(ctx0, store.Post{From: p.b.Member, Messages: []store.Draft{{To: "nobody", Fields: []byte(`"type":"z"`)}}}); !errors.Is(err, store.ErrUnknownPeer) {
					t.Errorf("room %d: a post to nobody: %v; want ErrUnknownPeer", i, err)
					return
				}
				mu.Lock()
				revisions[revisionOf(first.ID)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(revisions) >= rooms*rounds {
		t.Errorf("%d posts took %d transactions: none shared one", rooms*rounds, len(revisions))
	}
	t.Logf("%d posts in %d transactions", rooms*rounds, len(revisions))
	for _, p := range pairs {
		if got := len(mustRead(t, s, p.b.Member, 0)); got != 2*rounds {
			t.Fatalf("b reads %d messages; want %d", got, 2*rounds)
		}
	}
}

// A post of MaxPost messages and many small ones at once: groups stay
// within idsPerRevision entries and etcd's operation limit, and every id
// is unique and increasing in its room.
func TestGroupCommitLimits(t *testing.T) {
	t.Parallel()
	s := openN(t, 1, store.Options{ClientTimeout: time.Hour})[0]
	a, b := mustJoin(t, s, "r"), mustJoin(t, s, "r")
	big := make([]store.Draft, store.MaxPost)
	for i := range big {
		big[i] = store.Draft{Fields: fmt.Appendf(nil, `"type":"big","i":%d`, i)}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []uint64
	for i := range 48 {
		wg.Go(func() {
			p := store.Post{From: a.Member, IdempotencyKey: fmt.Sprint(i), Messages: big[:1+i%3]}
			if i%8 == 0 {
				p.Messages = big
			}
			got, err := s.Append(ctx0, p)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			all = append(all, got.IDs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	read := idsOf(mustRead(t, s, b.Member, 0))
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if !slices.Equal(read, all) {
		t.Fatalf("b reads %d ids, the posts got %d", len(read), len(all))
	}
}

// Close answers the posts still queued, and a post after it answers
// store.ErrClosed.
func TestGroupCommitClose(t *testing.T) {
	t.Parallel()
	s := openAt(t, testPrefix(t), Options{Options: store.Options{ClientTimeout: time.Hour}})
	a, _ := mustJoin(t, s, "r"), mustJoin(t, s, "r")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for {
				_, err := s.Append(ctx0, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	s.Close()
	wg.Wait()
}

// roundTrips counts the unary etcd calls of a client by method.
type roundTrips struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *roundTrips) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	r.mu.Lock()
	r.n[method[strings.LastIndex(method, "/")+1:]]++
	r.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (r *roundTrips) take() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.n
	r.n = map[string]int{}
	return n
}

// The etcd round trips of each request, one at a time on a quiet
// instance (no heartbeat, guard, acknowledgement flush or prune meanwhile):
// logged for BENCHMARKS §11, and bounded so that one that comes back is
// noticed. Run with -v to see them.
func TestRoundTripsPerRequest(t *testing.T) {
	rt := &roundTrips{n: map[string]int{}}
	c, err := clientv3.New(clientv3.Config{
		Endpoints: cluster.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(rt.interceptor)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	quiet := store.Options{ClientTimeout: time.Hour, PruneEvery: time.Hour}
	prefix := testPrefix(t)
	open := func() *Store {
		s, err := OpenClient(ctx0, c, Options{Options: quiet, Prefix: prefix, StaleAfter: time.Hour, AckFlush: time.Hour, MemberTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s, other := open(), open()
	full := func() bool {
		return len(s.presence.pool) == cap(s.presence.pool) && len(other.presence.pool) == cap(other.presence.pool)
	}
	total := func(n map[string]int) int {
		sum := 0
		for _, v := range n {
			sum += v
		}
		return sum
	}
	measure := func(what string, max int, f func()) {
		eventually(t, "lease pools full", full) // the pool refills from the join before
		time.Sleep(50 * time.Millisecond)
		rt.take()
		f()
		n := rt.take()
		t.Logf("%-40s %d round trips %v", what, total(n), n)
		if total(n) > max {
			t.Errorf("%s: %d etcd round trips %v; want at most %d", what, total(n), n, max)
		}
	}
	var a, b store.Joined
	measure("join (new room)", 2, func() { a = mustJoin(t, s, "r") })
	measure("join (second member)", 2, func() { b = mustJoin(t, s, "r") })
	measure("post", 1, func() {
		mustPost(t, s, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
	})
	measure("post with idempotency key", 1, func() {
		mustPost(t, s, store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
	})
	measure("post repeated", 0, func() {
		mustPost(t, s, store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
	})
	measure("post to a member joined elsewhere", 3, func() {
		c := mustJoin(t, other, "r2")
		d := mustJoin(t, s, "r2")
		rt.take()
		mustPost(t, s, store.Post{From: d.Member, Messages: []store.Draft{{To: c.ID, Fields: []byte(`"type":"x"`)}}})
	})
	measure("post refused (unknown peer)", 2, func() {
		if _, err := s.Append(ctx0, store.Post{From: a.Member, Messages: []store.Draft{{To: "nobody", Fields: []byte(`"type":"x"`)}}}); !errors.Is(err, store.ErrUnknownPeer) {
			t.Fatal(err)
		}
	})
	measure("read", 0, func() { mustRead(t, s, b.Member, 0) })
	measure("leave", 1, func() {
		if _, err := s.Leave(ctx0, b.Member, store.ReasonLeft); err != nil {
			t.Fatal(err)
		}
	})
}

// Joins and leaves in flight together in many rooms share transactions
// too, each with its own outcome: everybody gets in, the peer-joined
// events name the right members, and the leaves empty every room.
func TestGroupCommitJoinsAndLeaves(t *testing.T) {
	t.Parallel()
	const rooms = 40
	s := openN(t, 1, store.Options{ClientTimeout: time.Hour})[0]
	first := make([]store.Joined, rooms)
	for i := range first {
		first[i] = mustJoin(t, s, fmt.Sprintf("r%d", i))
	}
	second := make([]store.Joined, rooms)
	var wg sync.WaitGroup
	for i := range second {
		wg.Go(func() { second[i] = mustJoin(t, s, fmt.Sprintf("r%d", i)) })
	}
	wg.Wait()
	revisions := map[int64]bool{}
	for i, a := range first {
		msgs := mustRead(t, s, a.Member, 0)
		if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), second[i].ID) {
			t.Fatalf("room %d: the first member reads %d entries %v; want the second's peer-joined", i, len(msgs), idsOf(msgs))
		}
		revisions[revisionOf(msgs[0].ID)] = true
	}
	t.Logf("%d joins in %d transactions", rooms, len(revisions))
	for _, j := range slices.Concat(first, second) {
		wg.Go(func() {
			if _, err := s.Leave(ctx0, j.Member, store.ReasonLeft); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range rooms {
		if n, _ := s.Occupants(ctx0, fmt.Sprintf("r%d", i)); n != 0 {
			t.Fatalf("room %d has %d members after every leave", i, n)
		}
	}
}
