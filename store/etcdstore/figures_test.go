package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// TestFaultFigures measures what a fault costs: the longest a reader on
// the faulted instance waits for a message committed elsewhere, and the
// POST latencies of posters that retry with their Idempotency-Key as
// clients do (first attempt to success). It prints figures and checks
// only that every post was delivered to every reader; it runs when
// TINCAN_FAULT_FIGURES is set (benchmarks/BENCHMARKS.md takes its
// figures):
//
//	TINCAN_FAULT_FIGURES=1 go test -count=1 -run TestFaultFigures -v ./store/etcdstore/
func TestFaultFigures(t *testing.T) {
	if os.Getenv("TINCAN_FAULT_FIGURES") == "" {
		t.Skip("a measurement: set TINCAN_FAULT_FIGURES=1")
	}
	t.Run("blackholed path to the watched member, 15s", func(t *testing.T) {
		prefix := testPrefix(t)
		var ps []*silentProxy
		var eps []string
		for _, ep := range cluster.endpoints {
			p := newSilentProxy(t, ep)
			ps, eps = append(ps, p), append(eps, p.endpoint())
		}
		x := openAt(t, prefix, Options{Options: store.Options{Capacity: 16}, Endpoints: eps})
		y := openAt(t, prefix, Options{Options: store.Options{Capacity: 16}})
		z := openAt(t, prefix, Options{Options: store.Options{Capacity: 16}})
		tr := startTraffic(t, []*Store{x, y, z})
		watched := ps[watchedBy(t, x, y, ps)]
		time.Sleep(2 * time.Second)
		watched.silence()
		tr.mark()
		time.Sleep(15 * time.Second)
		watched.resume()
		time.Sleep(3 * time.Second)
		tr.stop(t).report(t, 0)
	})
	t.Run("leader transfer, 10 times 500ms apart", func(t *testing.T) {
		c := ownCluster(t)
		ss := ownStores(t, c, 3)
		tr := startTraffic(t, ss)
		time.Sleep(2 * time.Second)
		tr.mark()
		for range 10 {
			moveLeader(t, c)
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		tr.stop(t).report(t, -1)
	})
	t.Run("leader stopped (SIGSTOP), 10s", func(t *testing.T) {
		bin := os.Getenv("TINCAN_ETCD_MEMBER")
		if bin == "" {
			t.Skip("needs etcd members as processes: set TINCAN_ETCD_MEMBER to an etcd binary (or go build ./faults/cmd/etcdmember)")
		}
		procs, endpoints := startProcesses(t, bin, 3)
		// Instance 0 reaches the members through proxies that tell which
		// member its watch goes through; that member is made the leader
		// (a graceful transfer, before the measurement), then stopped.
		var ps []*silentProxy
		var eps []string
		for _, ep := range endpoints {
			p := newSilentProxy(t, ep)
			ps, eps = append(ps, p), append(eps, p.endpoint())
		}
		ss := []*Store{openAt(t, "/figures/", Options{Options: store.Options{Capacity: 16}, Endpoints: eps})}
		for range 2 {
			ss = append(ss, openAt(t, "/figures/", Options{Options: store.Options{Capacity: 16}, Endpoints: endpoints}))
		}
		watched := watchedBy(t, ss[0], ss[1], ps)
		cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if leader := processLeader(t, endpoints); leader != watched {
			st, err := cl.Status(ctx0, endpoints[watched])
			if err != nil {
				t.Fatal(err)
			}
			mcl, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoints[leader]}, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			_, err = mcl.MoveLeader(ctx0, st.Header.MemberId)
			mcl.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		tr := startTraffic(t, ss)
		time.Sleep(2 * time.Second)
		if leader := processLeader(t, endpoints); leader != watched {
			t.Fatalf("member %d leads, not %d", leader, watched)
		}
		if now := watchedBy(t, ss[0], ss[1], ps); now != watched {
			t.Fatalf("instance 0 watches through member %d now, not %d", now, watched)
		}
		tr.mark()
		procs[watched].Process.Signal(syscall.SIGSTOP)
		time.Sleep(10 * time.Second)
		procs[watched].Process.Signal(syscall.SIGCONT)
		time.Sleep(3 * time.Second)
		tr.stop(t).report(t, 0)
	})
	t.Run("leader killed (SIGKILL), back after 5s", func(t *testing.T) {
		bin := os.Getenv("TINCAN_ETCD_MEMBER")
		if bin == "" {
			t.Skip("needs etcd members as processes: set TINCAN_ETCD_MEMBER")
		}
		procs, endpoints := startProcesses(t, bin, 3)
		var ss []*Store
		for range 3 {
			ss = append(ss, openAt(t, "/figures/", Options{Options: store.Options{Capacity: 16}, Endpoints: endpoints}))
		}
		tr := startTraffic(t, ss)
		time.Sleep(2 * time.Second)
		leader := processLeader(t, endpoints)
		tr.mark()
		old := procs[leader]
		old.Process.Kill()
		old.Wait()
		time.Sleep(5 * time.Second)
		again := exec.Command(old.Path, old.Args[1:]...)
		if err := again.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { again.Process.Kill(); again.Wait() })
		time.Sleep(3 * time.Second)
		tr.stop(t).report(t, -1)
	})
	t.Run("leader stopped hard in process, back after 5s", func(t *testing.T) {
		c := ownCluster(t)
		ss := ownStores(t, c, 3)
		tr := startTraffic(t, ss)
		time.Sleep(2 * time.Second)
		leader := c.leader()
		tr.mark()
		c.stopMember(leader)
		time.Sleep(5 * time.Second)
		if err := c.start(leader); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		tr.stop(t).report(t, -1)
	})
}

// startProcesses starts an n-member etcd cluster of processes of bin
// (etcd's own flags), stopped at the end of t.
func startProcesses(t *testing.T, bin string, n int) ([]*exec.Cmd, []string) {
	ports, err := etcdtest.FreePorts(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	var initial, endpoints []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i]))
		endpoints = append(endpoints, fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]))
	}
	dir := t.TempDir()
	var procs []*exec.Cmd
	for i := range n {
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])
		cmd := exec.Command(bin, "--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(dir, fmt.Sprint(i)),
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--listen-client-urls", endpoints[i], "--advertise-client-urls", endpoints[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "figures", "--initial-cluster-state", "new")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Kill()
			cmd.Wait()
		})
		procs = append(procs, cmd)
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	eventually(t, "the etcd processes serve", func() bool {
		ctx, cancel := context.WithTimeout(ctx0, time.Second)
		defer cancel()
		_, err := cl.Get(ctx, "ready")
		return err == nil
	})
	return procs, endpoints
}

// processLeader is the index of the endpoint whose member leads.
func processLeader(t *testing.T, endpoints []string) int {
	cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i, ep := range endpoints {
		st, err := cl.Status(ctx0, ep)
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	t.Fatal("no leader")
	return -1
}

// watchedBy is the index of the proxy among ps (one per member, all of
// x's endpoints) that x's watch goes through: the one that carries a large
// post of y's to x.
func watchedBy(t *testing.T, x, y *Store, ps []*silentProxy) int {
	room := fmt.Sprint("big-", time.Now().UnixNano())
	big := mustJoin(t, y, room)
	mustJoin(t, x, room)
	before := make([]int64, len(ps))
	for i, p := range ps {
		before[i] = p.down.Load()
	}
	mustPost(t, y, store.Post{From: big.Member, Messages: []store.Draft{{Fields: []byte(`"pad":"` + strings.Repeat("x", 200_000) + `"`)}}})
	watched := -1
	eventually(t, "the large post reaches x through one proxy", func() bool {
		for i, p := range ps {
			if p.down.Load()-before[i] >= 200_000 {
				watched = i
				return true
			}
		}
		return false
	})
	return watched
}

func ownCluster(t *testing.T) *etcdCluster {
	c, err := startCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	return c
}

func ownStores(t *testing.T, c *etcdCluster, n int) []*Store {
	var ss []*Store
	for range n {
		ss = append(ss, openAt(t, "/figures/", Options{Options: store.Options{Capacity: 16}, Endpoints: c.endpoints}))
	}
	return ss
}

// traffic is posters (each posting every 20 ms) and one reader on each
// instance, in one room.
type traffic struct {
	ss      []*Store
	ctx     context.Context // the posters'
	cancel  context.CancelFunc
	rctx    context.Context // the readers'
	rcancel context.CancelFunc
	posters sync.WaitGroup
	readers sync.WaitGroup
	marked  time.Time // when the fault began

	mu       sync.Mutex
	posts    []postRecord
	arrivals []map[uint64]time.Time // by reader
	failures int                    // attempts that failed (retried)
}

type postRecord struct {
	id       uint64
	from     int // instance
	began    time.Time
	acked    time.Time
	attempts int
}

func startTraffic(t *testing.T, ss []*Store) *traffic {
	tr := &traffic{ss: ss, arrivals: make([]map[uint64]time.Time, len(ss))}
	tr.ctx, tr.cancel = context.WithCancel(context.Background())
	tr.rctx, tr.rcancel = context.WithCancel(context.Background())
	const posters = 2
	var readers []store.Member
	var posting [][]store.Member
	for i, s := range ss {
		readers = append(readers, mustJoin(t, s, "f").Member)
		posting = append(posting, nil)
		for range posters {
			posting[i] = append(posting[i], mustJoin(t, s, "f").Member)
		}
		tr.arrivals[i] = map[uint64]time.Time{}
	}
	for i, s := range ss {
		for _, m := range posting[i] {
			tr.posters.Go(func() { tr.post(t, i, s, m) })
		}
		tr.readers.Go(func() { tr.read(t, i, s, readers[i]) })
	}
	return tr
}

func (tr *traffic) mark() { tr.mu.Lock(); tr.marked = time.Now(); tr.mu.Unlock() }

func (tr *traffic) post(t *testing.T, i int, s *Store, m store.Member) {
	for n := 0; tr.ctx.Err() == nil; n++ {
		p := store.Post{From: m, IdempotencyKey: fmt.Sprint(n), Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"x","n":%d`, n))}}}
		rec := postRecord{from: i, began: time.Now()}
		for {
			rec.attempts++
			r, err := s.Append(ctx0, p)
			if err == nil {
				rec.id, rec.acked = r.ID, time.Now()
				break
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("post on instance %d: %v", i, err)
				return
			}
			tr.mu.Lock()
			tr.failures++
			tr.mu.Unlock()
			time.Sleep(100 * time.Millisecond) // a client's retry
		}
		tr.mu.Lock()
		tr.posts = append(tr.posts, rec)
		tr.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

func (tr *traffic) read(t *testing.T, i int, s *Store, m store.Member) {
	woken := make(chan struct{}, 1)
	defer s.Subscribe(m, func(uint64) {
		select {
		case woken <- struct{}{}:
		default:
		}
	})()
	var after uint64
	for {
		msgs, _, err := s.Read(ctx0, m, store.ReadRequest{After: after, Limit: 100, Acknowledge: true})
		switch {
		case errors.Is(err, store.ErrUnavailable):
			time.Sleep(100 * time.Millisecond)
			continue
		case err != nil:
			t.Errorf("read on instance %d: %v", i, err)
			return
		}
		now := time.Now()
		tr.mu.Lock()
		for _, msg := range msgs {
			tr.arrivals[i][msg.ID] = now
			after = msg.ID
		}
		tr.mu.Unlock()
		if len(msgs) > 0 {
			continue
		}
		select {
		case <-woken:
		case <-time.After(time.Second): // a long-poll's end
		case <-tr.rctx.Done():
			return
		}
	}
}

// stop ends the posts, lets the readers get what is left (for up to
// 20 s), and ends them.
func (tr *traffic) stop(t *testing.T) *traffic {
	tr.cancel()
	tr.posters.Wait()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !tr.drained(); {
		time.Sleep(50 * time.Millisecond)
	}
	tr.rcancel()
	tr.readers.Wait()
	return tr
}

// drained reports whether every reader has every other instance's posts.
func (tr *traffic) drained() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, p := range tr.posts {
		for r := range tr.ss {
			if _, ok := tr.arrivals[r][p.id]; !ok && r != p.from {
				return false
			}
		}
	}
	return true
}

// report prints the figures: faulted is the instance whose reader is
// measured (-1: every instance's).
func (tr *traffic) report(t *testing.T, faulted int) {
	t.Helper()
	var lat []time.Duration
	var longest time.Duration
	lost := 0
	for _, p := range tr.posts {
		if p.began.Before(tr.marked.Add(-time.Second)) {
			continue
		}
		lat = append(lat, p.acked.Sub(p.began))
		for r := range tr.ss {
			if r == p.from {
				continue // readers get the others' posts
			}
			at, ok := tr.arrivals[r][p.id]
			if !ok {
				lost++
				continue
			}
			if faulted < 0 || r == faulted {
				longest = max(longest, at.Sub(p.acked))
			}
		}
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		t.Fatal("no posts")
	}
	t.Logf("FIGURES %s: posts %d, failed attempts retried %d, p50 POST %v, p99 POST %v, slowest POST %v, longest reader wait %v, undelivered %d",
		t.Name(), len(lat), tr.failures, lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), longest.Round(time.Millisecond), lost)
	if lost > 0 {
		t.Errorf("%d posts were not delivered to every reader", lost)
	}
}
