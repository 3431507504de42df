// Package etcdproc runs etcd members as separate processes, for the fault
// suite: etcd's own server built from the module (faults/cmd/etcdmember)
// and started with etcd's command line, as an operator runs it, so that a
// test can kill one with SIGKILL, freeze it with SIGSTOP and cut its
// network. A member's peer URL may be advertised at another address than
// it listens on (a proxy's in front of it), so that its peer links can be
// cut too.
package etcdproc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tincan/tincan/internal/tincantest"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// Build builds faults/cmd/etcdmember once per test process and returns
// the binary's path.
func Build(t tincantest.TB) string {
	t.Helper()
	bin, err := tincantest.BuildCommand("./faults/cmd/etcdmember", "etcdmember")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Member is one etcd member: its addresses, and its current process.
type Member struct {
	Name string
	// PeerListen is the host:port it listens on for its peers;
	// PeerAdvertise the one it tells them (a proxy's, or PeerListen).
	PeerListen, PeerAdvertise string
	// Client is its client URL, http://127.0.0.1:port.
	Client string

	bin, dir, initial, token string
	t                        tincantest.TB

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
	log  *tincantest.SyncBuffer
	id   uint64
}

// Config describes a cluster to start.
type Config struct {
	// Members is how many (3 when zero).
	Members int
	// Advertise, when set, gives member i's advertised peer address
	// (host:port) from the one it listens on: the address of a proxy
	// forwarding to listen. Nil: members advertise where they listen.
	Advertise func(i int, listen string) string
}

// Cluster is the members, started together.
type Cluster struct {
	Members []*Member
}

// Start builds the binary and starts a new cluster in a temp dir, and
// waits until every member serves. The processes are killed at the end of
// the test, their logs shown if it failed.
func Start(t tincantest.TB, cfg Config) *Cluster {
	t.Helper()
	n := cfg.Members
	if n == 0 {
		n = 3
	}
	bin := Build(t)
	ports, err := etcdtest.FreePorts(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{
			Name:       fmt.Sprintf("m%d", i),
			PeerListen: fmt.Sprintf("127.0.0.1:%d", ports[i]),
			Client:     fmt.Sprintf("http://127.0.0.1:%d", ports[n+i]),
			bin:        bin, dir: filepath.Join(dir, fmt.Sprintf("m%d", i)), token: fmt.Sprintf("faults-%d", time.Now().UnixNano()), t: t,
		}
		m.PeerAdvertise = m.PeerListen
		if cfg.Advertise != nil {
			m.PeerAdvertise = cfg.Advertise(i, m.PeerListen)
		}
		initial = append(initial, fmt.Sprintf("%s=http://%s", m.Name, m.PeerAdvertise))
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.initial = strings.Join(initial, ",")
		m.token = c.Members[0].token
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.Members {
		wg.Go(func() { errs[i] = m.start("new") })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, pm := range resp.Members {
		for _, m := range c.Members {
			if pm.Name == m.Name {
				m.id = pm.ID
			}
		}
	}
	return c
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Client)
	}
	return eps
}

// Client is an etcd client of every member, closed at the end of the test.
func (c *Cluster) Client(t tincantest.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// start runs the member's process and waits until it says it serves.
func (m *Member) start(state string) error {
	args := []string{"--name", m.Name, "--data-dir", m.dir,
		"--listen-peer-urls", "http://" + m.PeerListen, "--initial-advertise-peer-urls", "http://" + m.PeerAdvertise,
		"--listen-client-urls", m.Client, "--advertise-client-urls", m.Client,
		"--initial-cluster", m.initial, "--initial-cluster-token", m.token, "--initial-cluster-state", state}
	lines := make(chan string, 16)
	cmd := exec.Command(m.bin, args...)
	log := &tincantest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = &tincantest.LineWriter{Lines: lines}, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m.mu.Lock()
	m.proc, m.done, m.log = cmd, done, log
	m.mu.Unlock()
	t := m.t
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("etcd member %s (pid %d, %v) log:\n%s", m.Name, cmd.Process.Pid, cmd.ProcessState, tincantest.LastBytes(log.String(), 3000))
		}
	})
	select {
	case line := <-lines:
		if line != "etcdmember ready" {
			return fmt.Errorf("member %s: first line %q", m.Name, line)
		}
		return nil
	case <-done:
		return fmt.Errorf("member %s exited at start (%v):\n%s", m.Name, cmd.ProcessState, tincantest.LastBytes(log.String(), 3000))
	case <-time.After(time.Minute):
		return fmt.Errorf("member %s: not ready within a minute", m.Name)
	}
}

// ID is the member's raft id.
func (m *Member) ID() uint64 { return m.id }

// Pid is the current process's.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc.Process.Pid
}

// Kill sends SIGKILL and waits until the process is gone.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd, done := m.proc, m.done
	m.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart runs the member again on its data directory (after Kill) and
// waits until it serves.
func (m *Member) Restart() error { return m.start("existing") }

// Stop freezes the process (SIGSTOP): it holds its connections open and
// answers nothing, as a paused VM or a stalled disk does.
func (m *Member) Stop() error { return m.signal(syscall.SIGSTOP) }

// Continue resumes a frozen process (SIGCONT).
func (m *Member) Continue() error { return m.signal(syscall.SIGCONT) }

func (m *Member) signal(s syscall.Signal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc.Process.Signal(s)
}

// Leader returns the index of the member that its peers agree leads,
// asking each member's status within a second; -1 when none is known.
func (c *Cluster) Leader(cli *clientv3.Client) int {
	for _, m := range c.Members {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, m.Client)
		cancel()
		if err != nil {
			continue
		}
		for j, o := range c.Members {
			if o.id == st.Leader {
				return j
			}
		}
	}
	return -1
}

// WaitLeader waits up to 30 s until a leader is known and returns it.
func (c *Cluster) WaitLeader(t tincantest.TB, cli *clientv3.Client) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if l := c.Leader(cli); l >= 0 {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("etcd has no leader after 30s")
	return -1
}
