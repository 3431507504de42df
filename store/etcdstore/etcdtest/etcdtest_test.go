package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// A three-member cluster serves writes, survives the hard stop of its
// leader (the other two elect one of themselves and keep what was
// written), and takes the member back on its data directory.
func TestClusterLosesAndRegainsItsLeader(t *testing.T) {
	c := Start(t, Config{Members: 3})
	if c.Size() != 3 || len(c.Endpoints()) != 3 {
		t.Fatalf("size %d, endpoints %q", c.Size(), c.Endpoints())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	put := func(k, v string) {
		t.Helper()
		// Retried as any client would while a new leader is elected.
		for {
			_, err := cli.Put(ctx, k, v)
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("put %s: %v", k, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	get := func(k string) string {
		t.Helper()
		resp, err := cli.Get(ctx, k)
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		if len(resp.Kvs) != 1 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}

	put("a", "1")
	old := c.WaitLeader(t)
	c.Stop(old)
	if c.Running(old) {
		t.Fatal("a stopped member still runs")
	}
	next := c.WaitLeader(t)
	if next == old {
		t.Fatalf("member %d leads after it was stopped", old)
	}
	put("b", "2")
	if get("a") != "1" || get("b") != "2" {
		t.Fatalf("after the leader's stop: a=%q b=%q", get("a"), get("b"))
	}
	c.Restart(t, old)
	c.WaitLeader(t)
	// The restarted member caught up: ask it alone.
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoint(old)}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	resp, err := one.Get(ctx, "b")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
		t.Fatalf("the restarted member answers %v %v", resp, err)
	}
}
