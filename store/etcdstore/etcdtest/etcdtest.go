// Package etcdtest runs a real etcd cluster inside a test process: N
// members on loopback ports, each with its data directory under the test's
// temporary directory, that a test can stop hard (as a crash) and start
// again, and whose leader it can find. It is for tests only: it links the
// whole etcd server, which the tincan binary does not.
//
// The members are etcd's own server (go.etcd.io/etcd/server/v3/embed),
// fsync and all; only their logs are discarded.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config is how Start sets the cluster up.
type Config struct {
	Members int // how many (1 or more; 3 tolerates the loss of one)

	// CertFile and KeyFile, when set, make the client URLs https:// with
	// this certificate (PEM files). ClientCAFile, when set besides, makes
	// the members require client certificates signed by that CA.
	CertFile, KeyFile, ClientCAFile string

	// CompactEvery, when set, compacts the history every CompactEvery
	// (etcd's --auto-compaction-mode=periodic), so that watches can fall
	// behind compaction as in production.
	CompactEvery time.Duration

	// Direct makes clients reach each member at its own client port, with
	// no gate in between: for benchmarks, where the gate's copying would
	// be measured too. Stop then leaves client connections to etcd to
	// notice the member's end, and a restarted member keeps its port.
	Direct bool
}

// Cluster is a running etcd cluster; every method is safe for concurrent
// use. Clients reach member i at Endpoint(i), a port of the test's own
// (a gate) that forwards to wherever the member listens in its current
// run.
type Cluster struct {
	configs   []*embed.Config
	gates     []*gate // none with Direct
	direct    bool
	scheme    string // of the client URLs
	endpoints []string

	mu      sync.Mutex
	members []*embed.Etcd // nil while stopped
}

// readyTimeout bounds the wait for a member to serve.
const readyTimeout = 60 * time.Second

// Start starts the cluster and waits until every member serves; it fails t
// if it cannot. The cluster stops at the end of t. Ports are picked free
// first; should another process take one before etcd binds it, Start tries
// again with others.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Members < 1 {
		t.Fatalf("etcdtest: %d members", cfg.Members)
	}
	var err error
	for attempt := range 3 {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("etcd-%d", attempt))
		var c *Cluster
		if c, err = start(dir, cfg); err == nil {
			t.Cleanup(c.stopAll) // before the temporary directory goes
			return c
		}
	}
	t.Fatalf("etcdtest: start %d members: %v", cfg.Members, err)
	return nil
}

// StartIn is Start for a caller without a testing.TB (a TestMain, a
// benchmark's command): the cluster keeps its data under dir, and runs
// until Close.
func StartIn(dir string, cfg Config) (*Cluster, error) {
	if cfg.Members < 1 {
		return nil, fmt.Errorf("etcdtest: %d members", cfg.Members)
	}
	return start(dir, cfg)
}

// Close stops every member and the gates.
func (c *Cluster) Close() { c.stopAll() }

func start(dir string, cfg Config) (*Cluster, error) {
	n := cfg.Members
	ports, err := FreePorts(2 * n) // peers, then clients (Direct)
	if err != nil {
		return nil, err
	}
	c := &Cluster{members: make([]*embed.Etcd, n), scheme: "http", direct: cfg.Direct}
	if cfg.CertFile != "" {
		c.scheme = "https"
	}
	clientHosts := make([]string, n)
	for i := range n {
		if cfg.Direct {
			clientHosts[i] = fmt.Sprintf("127.0.0.1:%d", ports[n+i])
			continue
		}
		g, err := openGate()
		if err != nil {
			c.stopAll()
			return nil, err
		}
		c.gates = append(c.gates, g)
		clientHosts[i] = g.addr()
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[i]))
	}
	for i := range n {
		e := embed.NewConfig()
		e.Name = fmt.Sprintf("m%d", i)
		e.Dir = filepath.Join(dir, e.Name)
		// Peers find each other at fixed ports; clients at the gate (the
		// member's own client port is picked by each run).
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])}
		client := url.URL{Scheme: c.scheme, Host: clientHosts[i]}
		e.ListenPeerUrls, e.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		e.AdvertiseClientUrls = []url.URL{client}
		e.InitialCluster = strings.Join(initial, ",")
		e.InitialClusterToken = "etcdtest"
		e.ClusterState = embed.ClusterStateFlagNew
		e.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		if cfg.CertFile != "" {
			e.ClientTLSInfo.CertFile, e.ClientTLSInfo.KeyFile = cfg.CertFile, cfg.KeyFile
			if cfg.ClientCAFile != "" {
				e.ClientTLSInfo.TrustedCAFile, e.ClientTLSInfo.ClientCertAuth = cfg.ClientCAFile, true
			}
		}
		if cfg.CompactEvery > 0 {
			e.AutoCompactionMode, e.AutoCompactionRetention = embed.CompactorModePeriodic, cfg.CompactEvery.String()
		}
		c.configs = append(c.configs, e)
		c.endpoints = append(c.endpoints, client.String())
	}
	// A new member serves once a quorum has formed: start them together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = c.run(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.stopAll()
		return nil, err
	}
	return c, nil
}

// FreePorts finds n loopback ports that are free now.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// run starts member i from its data directory, on a client port of its
// own behind its gate, and waits until it serves.
func (c *Cluster) run(i int) error {
	own, err := FreePorts(1)
	if err != nil {
		return err
	}
	cfg := c.configs[i]
	cfg.ListenClientUrls = []url.URL{{Scheme: c.scheme, Host: fmt.Sprintf("127.0.0.1:%d", own[0])}}
	if c.direct {
		cfg.ListenClientUrls = cfg.AdvertiseClientUrls
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("member %d: %w", i, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-e.Server.StopNotify():
		err := <-e.Err()
		e.Close()
		return fmt.Errorf("member %d stopped while starting: %v", i, err)
	case <-time.After(readyTimeout):
		e.Close()
		return fmt.Errorf("member %d: not ready after %v", i, readyTimeout)
	}
	c.mu.Lock()
	c.members[i] = e
	c.mu.Unlock()
	if !c.direct {
		c.gates[i].open(cfg.ListenClientUrls[0].Host)
	}
	return nil
}

// Size is the number of members, running or not.
func (c *Cluster) Size() int { return len(c.configs) }

// Endpoints are the client URLs of every member, running or not, as
// tincan's -etcd takes them (joined by commas).
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// Endpoint is member i's client URL.
func (c *Cluster) Endpoint(i int) string { return c.endpoints[i] }

// Running reports whether member i runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i] != nil
}

// Stop stops member i hard, as the death of its process would: every
// client connection to it is cut at once and new ones are refused, its
// raft node stops without handing leadership over, and then the rest of
// it. It does nothing to a stopped member.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if e != nil {
		if !c.direct {
			c.gates[i].cut()
		}
		e.Server.HardStop()
		e.Close()
	}
}

// Restart starts the stopped member i again on its data directory, its
// peer port and its endpoint, and waits until it serves (which needs a
// quorum with it); it fails t if it cannot.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	if c.Running(i) {
		t.Fatalf("etcdtest: member %d runs already", i)
	}
	// Its peer port was free a moment ago; should it be held yet (a
	// connection closing), try again shortly.
	var err error
	for range 5 {
		if err = c.run(i); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("etcdtest: restart member %d: %v", i, err)
}

// Leader is the index of the running member that leads, or -1 when none
// does now (an election under way, no quorum).
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.members {
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running member leads and every running member
// follows it, and returns its index; it fails t after 60 s.
func (c *Cluster) WaitLeader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		if i, ok := c.agreedLeader(); ok {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcdtest: no leader that every running member follows after %v", readyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) agreedLeader() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	leader, at := uint64(0), -1
	for i, e := range c.members {
		if e == nil {
			continue
		}
		l := uint64(e.Server.Leader())
		if l == 0 || (leader != 0 && l != leader) {
			return -1, false
		}
		leader = l
		if l == uint64(e.Server.MemberID()) {
			at = i
		}
	}
	return at, at >= 0
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
	for _, g := range c.gates {
		g.close()
	}
}
