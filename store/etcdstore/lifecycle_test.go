package etcdstore

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tincan/tincan/store"
)

// peerConnections are the goroutines of the HTTP connections between the
// members of the shared cluster, which come and go at any time; neither the
// engine nor its client speaks plain HTTP.
var peerConnections = []goleak.Option{
	goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
	goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"),
}

// A workload of every kind writes nothing outside the prefix, and Close
// stops every goroutine the engine started, its client's included. On an
// etcd of its own, where nothing else writes (on the shared one, the
// leases of other tests' members lapse at any time); not in parallel with
// other tests, whose goroutines would look like leaks.
func TestPrefixOnlyAndCloseStopsAll(t *testing.T) {
	own, err := startCluster(1)
	if err != nil {
		t.Fatal(err)
	}
	defer own.stop()
	watcher, err := clientv3.New(clientv3.Config{Endpoints: own.endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	// The member starts serving goroutines of its own after it is ready;
	// let it, before taking note of which goroutines run.
	if _, err := watcher.Get(ctx0, "warm-up"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	defer goleak.VerifyNone(t, append(peerConnections, goleak.IgnoreCurrent())...)
	ctx, cancel := context.WithCancel(ctx0)
	defer cancel()
	from, err := watcher.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	// Every key of the whole keyspace written from now on.
	events := watcher.Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(from.Header.Revision+1))

	prefix := testPrefix(t)
	s, err := Open(ctx0, Options{
		Options:   store.Options{Capacity: 3, MaxRooms: 10, ClientTimeout: 500 * time.Millisecond, PruneEvery: 100 * time.Millisecond},
		Endpoints: own.endpoints,
		Prefix:    strings.TrimSuffix(prefix, "/"), // the engine adds it
	})
	if err != nil {
		t.Fatal(err)
	}
	a := mustJoin(t, s, "r")
	release := s.Hold(a.Member)
	b, err := s.Join(ctx0, store.JoinRequest{Room: "r", Password: "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Hold(b.Member)()
	mustJoin(t, s, "r") // silent: it times out
	id := mustPost(t, s, store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}).ID
	mustPost(t, s, store.Post{From: b.Member, Messages: []store.Draft{{To: a.ID, Fields: []byte(`"type":"y"`)}}})
	if _, _, err := s.Read(ctx0, b.Member, store.ReadRequest{After: id, Limit: 10, Acknowledge: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Secret(ctx0, "turn", 16); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx0, store.JoinRequest{Room: "r", Token: a.Token}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "c, silent, times out", func() bool { n, _ := s.Occupants(ctx0, "r"); return n == 2 })
	if _, err := s.Prune(ctx0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Leave(ctx0, b.Member, store.ReasonLeft); err != nil {
		t.Fatal(err)
	}
	release()
	eventually(t, "a, released, times out and the room goes", func() bool { n, _ := s.Occupants(ctx0, "r"); return n == 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	done, err := watcher.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for resp := range events {
		for _, ev := range resp.Events {
			if !strings.HasPrefix(string(ev.Kv.Key), prefix) {
				t.Fatalf("the engine on prefix %q wrote %q", prefix, ev.Kv.Key)
			}
			seen++
		}
		if resp.Header.Revision >= done.Header.Revision {
			break
		}
	}
	if seen == 0 {
		t.Fatal("the workload wrote nothing")
	}
}
