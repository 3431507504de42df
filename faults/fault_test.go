package faults

// The fault matrix: one fault per run, each a test (go test -run Fault).
// Each run starts a fresh cluster, runs the traffic for -fault.before,
// strikes, runs it -fault.after more, stops it, drains (every reader must
// receive its room's end message), checks the history and prints its
// figures. Correctness (nothing lost, duplicated, out of order, invented;
// capacity, retention, presence, webhooks) fails a run whatever the
// flags; watch stall and p99 POST fail it past -fault.stall and
// -fault.p99.
//
// Without TINCAN_FAULTS=1 in the environment only TestFaultKillInstance
// runs (go test ./... stays quick); CI sets it. -fault.soak runs the whole
// matrix over and over for that long (TestFaultSoak).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	stallLimit = flag.Duration("fault.stall", envDuration("TINCAN_FAULT_STALL", 4*time.Second), "fail a run whose watch stall exceeds this (env TINCAN_FAULT_STALL)")
	p99Limit   = flag.Duration("fault.p99", envDuration("TINCAN_FAULT_P99", 3*time.Second), "fail a run whose p99 POST exceeds this (env TINCAN_FAULT_P99)")
	before     = flag.Duration("fault.before", 3*time.Second, "traffic before the fault")
	after      = flag.Duration("fault.after", 4*time.Second, "traffic after the fault ends")
	dump       = flag.String("fault.history", "", "write each failed run's history as JSON into this directory")
	soak       = flag.Duration("fault.soak", envDuration("TINCAN_FAULT_SOAK", 0), "TestFaultSoak: run the matrix over and over for this long (env TINCAN_FAULT_SOAK)")
)

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		fmt.Fprintf(os.Stderr, "faults: %s=%q is not a duration; using %v\n", name, v, def)
	}
	return def
}

// A fault strikes the cluster and returns once it is over (a killed
// process restarted, a frozen one resumed, a cut healed).
type fault struct {
	name   string
	strike func(t *testing.T, c *cluster)
}

const faultLength = 10 * time.Second

var matrix = []fault{
	{"KillInstance", func(t *testing.T, c *cluster) {
		c.tincan[0].Kill(t)
		time.Sleep(2 * time.Second)
		c.tincan[0].Restart(t)
	}},
	{"KillLeader", func(t *testing.T, c *cluster) { killMember(t, c, c.leader(t)) }},
	{"KillFollower", func(t *testing.T, c *cluster) { killMember(t, c, c.follower(t)) }},
	{"StopLeader", func(t *testing.T, c *cluster) { stopMember(t, c, c.leader(t)) }},
	{"StopFollower", func(t *testing.T, c *cluster) { stopMember(t, c, c.follower(t)) }},
	{"BlackholeClientPath", func(t *testing.T, c *cluster) {
		j := c.watched()[0]
		t.Logf("blackholing instance 0's path to member %d for %v", j, faultLength)
		c.path[0][j].Blackhole()
		time.Sleep(faultLength)
		c.heal()
	}},
	{"PartitionLeader", func(t *testing.T, c *cluster) { partition(t, c, c.leader(t)) }},
	{"PartitionFollower", func(t *testing.T, c *cluster) { partition(t, c, c.follower(t)) }},
	{"MoveLeader", func(t *testing.T, c *cluster) {
		for range 2 {
			l := c.leader(t)
			to := (l + 1) % 3
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.etcdAt(t, l).MoveLeader(ctx, c.etcd.Members[to].ID())
			cancel()
			if err != nil {
				t.Fatalf("MoveLeader %d -> %d: %v", l, to, err)
			}
			t.Logf("leadership moved from member %d to %d", l, to)
			time.Sleep(2 * time.Second)
		}
	}},
	{"Compaction", func(t *testing.T, c *cluster) {
		n := 0
		for end := time.Now().Add(faultLength); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rev, err := c.revision(ctx)
			if err == nil {
				_, err = c.cli.Compact(ctx, rev)
			}
			cancel()
			if err == nil {
				n++
			}
		}
		t.Logf("%d compactions, each to the revision of the moment", n)
	}},
	{"Defragment", func(t *testing.T, c *cluster) {
		for i, m := range c.etcd.Members {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			began := time.Now()
			_, err := c.cli.Defragment(ctx, m.Client)
			cancel()
			if err != nil {
				t.Fatalf("defragment member %d: %v", i, err)
			}
			t.Logf("member %d defragmented in %v", i, time.Since(began).Round(time.Millisecond))
			time.Sleep(time.Second)
		}
	}},
}

func killMember(t *testing.T, c *cluster, i int) {
	t.Logf("SIGKILL etcd member %d (pid %d)", i, c.etcd.Members[i].Pid())
	c.etcd.Members[i].Kill()
	time.Sleep(3 * time.Second)
	if err := c.etcd.Members[i].Restart(); err != nil {
		t.Fatal(err)
	}
}

func stopMember(t *testing.T, c *cluster, i int) {
	t.Logf("SIGSTOP etcd member %d for %v", i, faultLength)
	if err := c.etcd.Members[i].Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(faultLength)
	if err := c.etcd.Members[i].Continue(); err != nil {
		t.Fatal(err)
	}
}

func partition(t *testing.T, c *cluster, i int) {
	t.Logf("cutting etcd member %d's peer links for %v", i, faultLength)
	c.isolate(i)
	time.Sleep(faultLength / 2)
	t.Logf("halfway, the members see leaders %v", c.leaders())
	time.Sleep(faultLength / 2)
	c.heal()
}

// gated says whether the fault runs in this go test: all with
// TINCAN_FAULTS=1, else only the quick one.
func gated(t *testing.T, name string) {
	if os.Getenv("TINCAN_FAULTS") == "" && name != "KillInstance" {
		t.Skipf("the fault matrix runs with TINCAN_FAULTS=1 (CI sets it); without it only TestFaultKillInstance runs")
	}
}

func TestFaultKillInstance(t *testing.T)        { runFault(t, "KillInstance") }
func TestFaultKillLeader(t *testing.T)          { runFault(t, "KillLeader") }
func TestFaultKillFollower(t *testing.T)        { runFault(t, "KillFollower") }
func TestFaultStopLeader(t *testing.T)          { runFault(t, "StopLeader") }
func TestFaultStopFollower(t *testing.T)        { runFault(t, "StopFollower") }
func TestFaultBlackholeClientPath(t *testing.T) { runFault(t, "BlackholeClientPath") }
func TestFaultPartitionLeader(t *testing.T)     { runFault(t, "PartitionLeader") }
func TestFaultPartitionFollower(t *testing.T)   { runFault(t, "PartitionFollower") }
func TestFaultMoveLeader(t *testing.T)          { runFault(t, "MoveLeader") }
func TestFaultCompaction(t *testing.T)          { runFault(t, "Compaction") }
func TestFaultDefragment(t *testing.T)          { runFault(t, "Defragment") }

// TestFaultSoak runs the matrix in turn, each fault a subtest, until
// -fault.soak has passed (skipped when it is zero).
func TestFaultSoak(t *testing.T) {
	if *soak <= 0 {
		t.Skip("-fault.soak (or TINCAN_FAULT_SOAK) is zero: no soak")
	}
	end := time.Now().Add(*soak)
	type worst struct {
		runs, acked, lost, duplicated, violations int
		stall, p99, p99Fault                      time.Duration
	}
	by := map[string]*worst{}
	for i := 0; time.Now().Before(end); i++ {
		f := matrix[i%len(matrix)]
		t.Run(fmt.Sprintf("%d-%s", i, f.name), func(t *testing.T) {
			fig := run(t, f)
			w := by[f.name]
			if w == nil {
				w = &worst{}
				by[f.name] = w
			}
			w.runs++
			w.acked += fig.Acked
			w.lost += fig.Lost
			w.duplicated += fig.Duplicated
			w.violations += fig.Violations
			w.stall, w.p99, w.p99Fault = max(w.stall, fig.WatchStall), max(w.p99, fig.P99Post), max(w.p99Fault, fig.P99Fault)
		})
	}
	fmt.Printf("SOAK %v: fault, runs, acked, lost, duplicated, violations, worst watch stall, worst p99 POST (over a run, during its fault)\n", *soak)
	for _, f := range matrix {
		if w := by[f.name]; w != nil {
			fmt.Printf("SOAK %-20s %d runs, acked %d, lost %d, duplicated %d, violations %d, watch stall %v, p99 POST %v, during the fault %v\n",
				f.name, w.runs, w.acked, w.lost, w.duplicated, w.violations, w.stall.Round(time.Millisecond), w.p99.Round(time.Millisecond), w.p99Fault.Round(time.Millisecond))
		}
	}
}

func runFault(t *testing.T, name string) {
	gated(t, name)
	for _, f := range matrix {
		if f.name == name {
			run(t, f)
			return
		}
	}
	t.Fatalf("no fault %q", name)
}

// run is one run: cluster, traffic, the fault, drain, check; it returns
// the run's figures.
func run(t *testing.T, f fault) Figures {
	h := NewHistory(capacity, maxRoomMessages, clientTimeout)
	c := startCluster(t, h)
	stop, stopTraffic := context.WithCancel(context.Background())
	defer stopTraffic()
	tr := startTraffic(t, c, stop)
	// Members fall silent before the fault and during its first 2 s, so
	// that they time out during it, and before the drain ends.
	silence := time.AfterFunc(*before+2*time.Second, func() { tr.noMoreSilent.Store(true) })
	defer silence.Stop()
	time.Sleep(*before)
	struck := h.Now()
	f.strike(t, c)
	over := h.Now()
	h.mu.Lock()
	h.FaultFrom, h.FaultTo = struck, over
	h.mu.Unlock()
	time.Sleep(*after)
	stopTraffic()
	t.Logf("traffic stopped at %v", h.Now().Round(time.Millisecond))
	tr.drain(clientTimeout + 15*time.Second) // a silent member is removed within the client timeout + 5 s
	t.Logf("end messages posted at %v", h.Now().Round(time.Millisecond))
	tr.finish(60 * time.Second)
	t.Logf("readers done at %v", h.Now().Round(time.Millisecond))
	if bad := c.hooks.failures(); len(bad) > 0 {
		t.Errorf("%d webhook requests failed verification, e.g. %s", len(bad), bad[0])
	}
	// Webhooks may still be on their way: give them a few seconds.
	var vs []Violation
	var fig Figures
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		vs, fig = Check(h)
		if !missingWebhooks(vs) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("fault %s from %v to %v: %s", f.name, struck.Round(time.Millisecond), over.Round(time.Millisecond), fig)
	fmt.Printf("FAULT %-20s %s\n", f.name, fig)
	if len(vs) > 0 {
		t.Errorf("%d violations:\n%s", len(vs), Summary(vs, 5))
	}
	if fig.WatchStall > *stallLimit {
		t.Errorf("watch stall %v > -fault.stall %v (by %v)", fig.WatchStall.Round(time.Millisecond), *stallLimit, (fig.WatchStall - *stallLimit).Round(time.Millisecond))
	}
	if fig.P99Post > *p99Limit {
		t.Errorf("p99 POST %v > -fault.p99 %v (by %v)", fig.P99Post.Round(time.Millisecond), *p99Limit, (fig.P99Post - *p99Limit).Round(time.Millisecond))
	}
	if fig.P99Fault > *p99Limit {
		t.Errorf("p99 POST during the fault %v > -fault.p99 %v (by %v)", fig.P99Fault.Round(time.Millisecond), *p99Limit, (fig.P99Fault - *p99Limit).Round(time.Millisecond))
	}
	if fig.Acked == 0 {
		t.Error("no post was acknowledged")
	}
	if t.Failed() && *dump != "" {
		h.mu.Lock()
		b, err := json.Marshal(h)
		h.mu.Unlock()
		file := filepath.Join(*dump, fmt.Sprintf("%s-%d.json", strings.ReplaceAll(t.Name(), "/", "."), time.Now().Unix()))
		if err == nil {
			err = os.WriteFile(file, b, 0o644)
		}
		t.Logf("history: %s (%v)", file, err)
	}
	return fig
}

// missingWebhooks says whether some violation is a webhook's (which may
// only be late).
func missingWebhooks(vs []Violation) bool {
	for _, v := range vs {
		if v.Kind == "webhook" {
			return true
		}
	}
	return false
}
