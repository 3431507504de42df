package etcdstore

import (
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

// silentProxies puts a silent proxy in front of every member of the
// shared cluster.
func silentProxies(t testing.TB) ([]*silentProxy, []string) {
	var ps []*silentProxy
	var eps []string
	for _, ep := range cluster.endpoints {
		p := newSilentProxy(t, ep)
		ps = append(ps, p)
		eps = append(eps, p.endpoint())
	}
	return ps, eps
}

// silentPair opens two instances on a fresh prefix of the shared
// cluster: x reaching every member through a silent proxy (ps, at eps),
// y reaching them directly.
func silentPair(t testing.TB, opts store.Options) (ps []*silentProxy, eps []string, x, y *Store) {
	t.Helper()
	prefix := testPrefix(t)
	ps, eps = silentProxies(t)
	x = openAt(t, prefix, Options{Options: opts, Endpoints: eps})
	y = openAt(t, prefix, Options{Options: opts})
	return ps, eps, x, y
}

// watchedProxy is the proxy the watch of s goes through.
func watchedProxy(t testing.TB, s *Store, ps []*silentProxy) *silentProxy {
	t.Helper()
	w := s.stream.Load()
	if w == nil || w.node == nil {
		t.Fatal("no watch on a node")
	}
	for _, p := range ps {
		if p.endpoint() == w.node.url {
			return p
		}
	}
	t.Fatalf("the watch is on %s, behind no proxy", w.node.url)
	return nil
}

// readUntil reads m's entries on s until one has id, retrying what finds
// etcd unavailable, and says how long that took; it fails t after limit.
func readUntil(t testing.TB, s *Store, m store.Member, id uint64, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		msgs, _, err := s.Read(ctx0, m, store.ReadRequest{Limit: 1000})
		if err != nil && !errors.Is(err, store.ErrUnavailable) {
			t.Fatal(err)
		}
		if slices.ContainsFunc(msgs, func(msg store.Message) bool { return msg.ID == id }) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("entry %d not read on the faulted instance after %v", id, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The client path between an instance and the member its watch goes
// through goes silent (nothing forwarded, nothing closed): the instance
// notices, moves its watch to another member, and its reader gets what
// was posted on another instance; its own posts and joins go to the
// members that answer. Before, such a watch stayed silent until gRPC
// keepalive gave up (about 15 s), and every third request waited out the
// request timeout.
func TestSilentWatchedMember(t *testing.T) {
	t.Parallel()
	ps, _, x, y := silentPair(t, store.Options{Capacity: 3})
	a, b := mustJoin(t, y, "r"), mustJoin(t, x, "r")
	first := mustPost(t, y, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"first"`)}}})
	readUntil(t, x, b.Member, first.ID, 20*time.Second)

	watched := watchedProxy(t, x, ps)
	watched.silence()
	defer watched.resume()
	start := time.Now()
	p := mustPost(t, y, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"during"`)}}})
	// The bound is generous (the engine's target is 4 s, the benchmark's
	// figure); the measured stall is printed.
	stall := readUntil(t, x, b.Member, p.ID, 12*time.Second)
	t.Logf("reader on the instance whose watched member went silent: waited %v for a message posted on another instance", stall.Round(time.Millisecond))
	if n := testutil.ToFloat64(x.metrics.watchMoves); n < 1 {
		t.Fatalf("the watch moved %v times, want at least once", n)
	}
	if w := x.stream.Load(); w.node.url == watched.endpoint() {
		t.Fatalf("the watch is still on the silent member %s", w.node.url)
	}

	// The instance's own writes go to members that answer, each within
	// less than the request timeout once the silent member is known.
	var slowest time.Duration
	for i := range 6 {
		t0 := time.Now()
		r, err := x.Append(ctx0, store.Post{From: b.Member, IdempotencyKey: fmt.Sprint("k", i), Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
		if err != nil {
			t.Fatalf("post %d on the faulted instance: %v", i, err)
		}
		slowest = max(slowest, time.Since(t0))
		readUntil(t, y, a.Member, r.ID, 12*time.Second)
	}
	c, err := x.Join(ctx0, store.JoinRequest{Room: "r"})
	if err != nil {
		t.Fatalf("join on the faulted instance: %v", err)
	}
	t.Logf("posts on the faulted instance after the fault began %v: slowest %v; members found silent: %v", time.Since(start).Round(time.Millisecond), slowest.Round(time.Millisecond), testutil.ToFloat64(x.metrics.suspects))

	watched.resume()
	last := mustPost(t, y, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"after"`)}}})
	readUntil(t, x, c.Member, last.ID, 20*time.Second)
}

// A graceful leader transfer (etcd's MoveLeader, as a rolling upgrade
// does), several times over, while three instances post (half of the
// posts with Idempotency-Keys, half without) and a reader on each
// follows: no post fails, and every post is delivered once, in order.
func TestMoveLeaderWrites(t *testing.T) {
	t.Parallel() // on a cluster of its own
	c, err := startCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	var ss []*Store
	for range 3 {
		// A request timeout far above the default 5 s, so that a host
		// slowed by other work does not fail a post: what is checked is
		// that a transfer costs none, where before a post in flight
		// during one waited the whole timeout and was refused.
		ss = append(ss, openAt(t, "/move/", Options{Options: store.Options{Capacity: 3}, Endpoints: c.endpoints, RequestTimeout: 30 * time.Second}))
	}
	var members []store.Joined
	for _, s := range ss {
		members = append(members, mustJoin(t, s, "m"))
	}
	const perWriter = 60
	var writers, readers sync.WaitGroup
	posted := make([][]uint64, len(ss))
	latencies := make([][]time.Duration, len(ss))
	started := make(chan struct{})
	var startOnce sync.Once
	for w := range ss {
		writers.Go(func() {
			for i := range perWriter {
				if i == 5 {
					startOnce.Do(func() { close(started) })
				}
				p := store.Post{From: members[w].Member, Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"x","w":%d,"i":%d`, w, i))}}}
				if i%2 == 0 { // half of them without: the engine cannot repeat those
					p.IdempotencyKey = fmt.Sprint(i)
				}
				t0 := time.Now()
				r, err := ss[w].Append(ctx0, p)
				if err != nil {
					t.Errorf("writer %d, post %d, during leader transfers: %v", w, i, err)
					return
				}
				latencies[w] = append(latencies[w], time.Since(t0))
				posted[w] = append(posted[w], r.ID)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	got := make([][]uint64, len(ss))
	done := make(chan struct{})
	for r := range ss {
		readers.Go(func() { got[r] = follow(t, ss[r], members[r].Member, 2*perWriter, done) })
	}
	<-started
	for range 3 {
		moveLeader(t, c)
		time.Sleep(300 * time.Millisecond)
	}
	writers.Wait()
	close(done)
	readers.Wait()
	if t.Failed() {
		t.FailNow()
	}
	leader := c.leader()
	for i, s := range ss {
		eventually(t, fmt.Sprintf("instance %d sends its writes to the new leader", i), func() bool {
			l := s.nodes.leader.Load()
			return l != nil && l.url == c.endpoints[leader]
		})
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	t.Logf("posts across 3 leader transfers: %d, p99 %v, slowest %v", len(all), all[len(all)*99/100].Round(time.Millisecond), all[len(all)-1].Round(time.Millisecond))
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
}

// moveLeader hands the leadership of c over to the next member, as
// etcdctl move-leader does (asking the leader).
func moveLeader(t testing.TB, c *etcdCluster) {
	t.Helper()
	leader := c.leader()
	if leader < 0 {
		t.Fatal("no leader")
	}
	next := (leader + 1) % len(c.members)
	c.mu.Lock()
	to := uint64(c.members[next].Server.MemberID())
	c.mu.Unlock()
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{c.endpoints[leader]}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.MoveLeader(ctx0, to); err != nil {
		t.Fatalf("move the leader from member %d to %d: %v", leader, next, err)
	}
}

// What the engine may end on a silent member and send again: reads, and
// writes whose transaction compares what it writes.
func TestRepeatable(t *testing.T) {
	keys := layout{prefix: "/p/"}
	ns := &nodes{s: &Store{keys: keys}}
	info, idem, msg, ack := keys.info("r"), keys.idem("r", "a", "k"), keys.msg("r", "n"), keys.ack("r", "a")
	keyed := clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(info), "=", 5), clientv3.Compare(clientv3.ModRevision(idem), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(msg, "m"), clientv3.OpPut(idem, "i")},
		[]clientv3.Op{clientv3.OpGet(idem)})
	unkeyed := clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(info), "=", 5)},
		[]clientv3.Op{clientv3.OpPut(msg, "m")}, nil)
	seq := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(info), ">", 0)}, []clientv3.Op{clientv3.OpPut(keys.seq("r"), "")}, nil)
	acked := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ack), "<", "9")}, []clientv3.Op{clientv3.OpPut(ack, "9")}, nil)
	for _, c := range []struct {
		name string
		op   clientv3.Op
		want bool
	}{
		{"a read", clientv3.OpGet(info), true},
		{"a put alone", clientv3.OpPut(msg, "m"), false},
		{"a delete alone", clientv3.OpDelete(msg), false},
		{"a post with a key", keyed, true},
		{"a post without", unkeyed, false},
		{"a group of posts with keys and a seq rewrite", clientv3.OpTxn(nil, []clientv3.Op{keyed, keyed, seq}, nil), true},
		{"a group with a post without a key", clientv3.OpTxn(nil, []clientv3.Op{keyed, unkeyed}, nil), false},
		{"acknowledgements raised", clientv3.OpTxn(nil, []clientv3.Op{acked, acked}, nil), true},
		{"an else branch that writes", clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(idem), "=", 0)}, []clientv3.Op{clientv3.OpPut(idem, "i")}, []clientv3.Op{clientv3.OpPut(msg, "m")}), false},
	} {
		if got := ns.repeatable(c.op); got != c.want {
			t.Errorf("%s: repeatable %v, want %v", c.name, got, c.want)
		}
	}
}

// The client path between an instance and the leader goes silent while
// the leader works on: the instance's writes, which go to the leader,
// leave it and go through the other members (which forward them), and
// what it posts reaches the other instances.
func TestSilentLeaderPath(t *testing.T) {
	t.Parallel()
	ps, eps, x, y := silentPair(t, store.Options{Capacity: 3})
	a, b := mustJoin(t, y, "r"), mustJoin(t, x, "r")
	leader := cluster.leader()
	if leader < 0 {
		t.Fatal("no leader")
	}
	eventually(t, "x sends its writes to the leader", func() bool {
		l := x.nodes.leader.Load()
		return l != nil && l.url == eps[leader]
	})
	ps[leader].silence()
	defer ps[leader].resume()
	var slowest time.Duration
	for i := range 10 {
		t0 := time.Now()
		r, err := x.Append(ctx0, store.Post{From: b.Member, IdempotencyKey: fmt.Sprint(i), Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
		if err != nil {
			t.Fatalf("post %d with the path to the leader silent: %v", i, err)
		}
		slowest = max(slowest, time.Since(t0))
		readUntil(t, y, a.Member, r.ID, 12*time.Second)
	}
	t.Logf("posts with the path to the leader silent: slowest %v", slowest.Round(time.Millisecond))
	if l := x.nodes.leader.Load(); l != nil && l.url == eps[leader] {
		t.Fatal("x still sends its writes to the leader it cannot reach")
	}
}
