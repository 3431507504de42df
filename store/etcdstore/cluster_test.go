package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// cluster is the in-process etcd the tests share: three members on
// loopback ports, in a temporary directory, started once by TestMain.
// Each test works under a prefix of its own (testPrefix).
var cluster *etcdCluster

func TestMain(m *testing.M) {
	c, err := startCluster(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start etcd:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.stop()
	os.Exit(code)
}

// etcdCluster is a real etcd cluster whose members run in this process.
type etcdCluster struct {
	dir       string
	configs   []*embed.Config
	endpoints []string

	mu      sync.Mutex
	members []*embed.Etcd // nil while stopped
}

// startCluster starts n members and waits until they serve. Ports are
// picked free first; should another process take one meanwhile, it tries
// again with others.
func startCluster(n int) (*etcdCluster, error) {
	var err error
	for range 3 {
		var c *etcdCluster
		if c, err = tryCluster(n); err == nil {
			return c, nil
		}
	}
	return nil, err
}

func tryCluster(n int) (*etcdCluster, error) {
	dir, err := os.MkdirTemp("", "etcdstore-test-")
	if err != nil {
		return nil, err
	}
	ports, err := etcdtest.FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &etcdCluster{dir: dir, members: make([]*embed.Etcd, n)}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i]))
	}
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "etcdstore-test"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		c.configs = append(c.configs, cfg)
		c.endpoints = append(c.endpoints, client.String())
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = c.start(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// start starts member i (again, after stop: from its data directory) and
// waits until it serves.
func (c *etcdCluster) start(i int) error {
	e, err := embed.StartEtcd(c.configs[i])
	if err != nil {
		return fmt.Errorf("member %d: %w", i, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return fmt.Errorf("member %d: not ready after 60s", i)
	}
	c.mu.Lock()
	c.members[i] = e
	c.mu.Unlock()
	return nil
}

// stopMember stops member i hard (as a crash: no leadership handed over).
func (c *etcdCluster) stopMember(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if e != nil {
		e.Server.HardStop()
		e.Close()
	}
}

// leader is the index of the member that leads, or -1.
func (c *etcdCluster) leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.members {
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

func (c *etcdCluster) stop() {
	for i := range c.members {
		c.stopMember(i)
	}
	os.RemoveAll(c.dir)
}

var prefixes atomic.Int64

// testPrefix is a prefix no other test uses.
func testPrefix(t testing.TB) string {
	return fmt.Sprintf("/test/%d-%s/", prefixes.Add(1), strings.ReplaceAll(t.Name(), "/", "."))
}

// openAt opens an instance of the engine on prefix (connected to every
// member of the cluster unless opts says otherwise), closed when the test
// ends.
func openAt(t testing.TB, prefix string, opts Options) *Store {
	t.Helper()
	if opts.Endpoints == nil {
		opts.Endpoints = cluster.endpoints
	}
	opts.Prefix = prefix
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openN opens n instances on one fresh prefix.
func openN(t testing.TB, n int, opts store.Options) []*Store {
	t.Helper()
	prefix := testPrefix(t)
	out := make([]*Store, n)
	for i := range out {
		out[i] = openAt(t, prefix, Options{Options: opts})
	}
	return out
}
