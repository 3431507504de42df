package main

// The server of the end-to-end tests: the real binary, built by the test,
// run on a loopback port, killed with SIGKILL or stopped with SIGTERM, and
// started again on the same bbolt file.

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildTincan builds the server into a temp dir and returns the binary's
// path (the build cache makes every build after the first quick).
func buildTincan(t testing.TB) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tincan")
	began := time.Now()
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built the binary in %v", time.Since(began).Round(time.Millisecond))
	return bin
}

// binServer is the binary serving on a loopback port with a bbolt file in a
// temp dir; the rate limits and the caps on open streams are off (all the
// test's clients share 127.0.0.1), the embedded TURN too, unless the flags
// say otherwise.
// TINCAN_* variables of the test's environment are not passed on (withEnv
// sets its own). The file outlives each process: restart runs the binary
// again on it, and the endpoint follows it to its new port. Every process
// is killed at the end of the test that started the server, and its log
// shown if the test failed.
type binServer struct {
	*endpoint
	t    testing.TB // the test that started it, which owns its cleanups
	bin  string
	argv []string
	env  []string
	proc *binProcess // the current process
}

// binProcess is one process of the binary.
type binProcess struct {
	cmd    *exec.Cmd
	lines  *lineWriter // stdout
	stderr *syncBuffer
	done   chan struct{} // closed once it exited
}

// startBinServer runs bin and waits until it listens and its /healthz
// answers 200.
func startBinServer(t testing.TB, bin string, opts ...serverOption) *binServer {
	t.Helper()
	var cfg serverConfig
	cfg.apply(opts)
	db := filepath.Join(t.TempDir(), "tincan.db")
	s := &binServer{
		endpoint: newEndpoint("", cfg.client),
		t:        t,
		bin:      bin,
		argv:     append([]string{"-addr", "127.0.0.1:0", "-db", db, "-turn=false", "-rate-limit", "0", "-member-rate-limit", "0", "-max-streams-per-ip", "0", "-max-streams-per-member", "0"}, cfg.flags...),
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TINCAN_") {
			s.env = append(s.env, kv)
		}
	}
	for name, value := range cfg.env {
		s.env = append(s.env, name+"="+value)
	}
	if cfg.client != nil {
		t.Cleanup(cfg.client.CloseIdleConnections)
	}
	s.restart(t)
	return s
}

// restart runs the binary again on the server's file (the process before
// must have ended: kill or terminate), waits for its /healthz, and points
// the endpoint at it.
func (s *binServer) restart(t testing.TB) {
	t.Helper()
	p := s.spawn(t)
	s.proc = p
	select {
	case line := <-p.lines.lines:
		url, ok := strings.CutPrefix(line, "tincan listening on ")
		if !ok {
			t.Fatalf("first line on stdout: %q", line)
		}
		s.setURL(url)
	case <-p.done:
		t.Fatalf("the server exited at start (%v): did the db not reopen?\n%s", p.cmd.ProcessState, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start within 30s")
	}
	waitHealthy(t, s.endpoint)
}

// spawn starts a process of the binary on the server's file without
// waiting for it, and without making it the server's current process.
func (s *binServer) spawn(t testing.TB) *binProcess {
	t.Helper()
	p := &binProcess{cmd: exec.Command(s.bin, s.argv...), lines: &lineWriter{lines: make(chan string, 16)}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = s.env
	p.cmd.Stdout, p.cmd.Stderr = p.lines, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	owner := s.t
	owner.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if owner.Failed() {
			owner.Logf("server (pid %d, %v) log:\n%s", p.cmd.Process.Pid, p.cmd.ProcessState, lastBytes(p.stderr.String(), 4000))
		}
	})
	return p
}

// kill sends SIGKILL to the current process and waits until it is gone; it
// must not have ended before.
func (s *binServer) kill(t testing.TB) {
	t.Helper()
	s.proc.kill(t)
}

func (p *binProcess) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	<-p.done
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the server ended with %v before it was killed:\n%s", p.cmd.ProcessState, p.stderr)
	}
}

// terminate sends SIGTERM to the current process and expects exit status 0
// within limit; it returns how long the exit took.
func (s *binServer) terminate(t testing.TB, limit time.Duration) time.Duration {
	t.Helper()
	p := s.proc
	began := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if !p.cmd.ProcessState.Success() {
			t.Errorf("after SIGTERM the server exited with %v", p.cmd.ProcessState)
		}
	case <-time.After(limit):
		t.Errorf("the server did not exit within %v of SIGTERM", limit)
	}
	return time.Since(began)
}

// exitState is how the current process ended (nil while it runs).
func (s *binServer) exitState() *os.ProcessState { return s.proc.cmd.ProcessState }
