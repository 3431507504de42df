// Package tincantest runs the real tincan binary for tests outside package
// main (the Go client's, the end-to-end suite): built once per test binary,
// served on a loopback port with a bbolt file in a temp dir, killed with
// SIGKILL or stopped with SIGTERM, and started again on the same file.
package tincantest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is what the package needs of a test: testing.TB has it, and so has
// Main, for a TestMain.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

// Main is a TB for a TestMain, where there is no test yet: a server
// started with it runs until Close. A Fatal panics.
type Main struct {
	mu       sync.Mutex
	cleanups []func()
	dirs     []string
	failed   bool
}

func (m *Main) Helper() {}
func (m *Main) Fatal(args ...any) {
	m.mu.Lock()
	m.failed = true
	m.mu.Unlock()
	panic(fmt.Sprint(args...))
}
func (m *Main) Fatalf(format string, args ...any) { m.Fatal(fmt.Sprintf(format, args...)) }
func (m *Main) Errorf(format string, args ...any) {
	m.mu.Lock()
	m.failed = true
	m.mu.Unlock()
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (m *Main) Logf(format string, args ...any) {
	if m.Failed() {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}
func (m *Main) Cleanup(f func()) { m.mu.Lock(); m.cleanups = append(m.cleanups, f); m.mu.Unlock() }
func (m *Main) Failed() bool     { m.mu.Lock(); defer m.mu.Unlock(); return m.failed }

// TempDir makes a directory that Close removes.
func (m *Main) TempDir() string {
	d, err := os.MkdirTemp("", "tincantest-")
	if err != nil {
		m.Fatal(err)
	}
	m.mu.Lock()
	m.dirs = append(m.dirs, d)
	m.mu.Unlock()
	return d
}

// Close runs the cleanups, last first, and removes the directories.
func (m *Main) Close() {
	m.mu.Lock()
	cleanups, dirs := m.cleanups, m.dirs
	m.cleanups, m.dirs = nil, nil
	m.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

var (
	builds   = map[string]*built{} // by package: BuildCommand's
	buildsMu sync.Mutex
)

// Build builds the tincan binary (the module's main package) once per test
// process and returns its path. It fails t if the build fails. With
// TINCANTEST_BIN set in the environment it returns that path instead (a
// binary built before, from another checkout).
func Build(t TB) string {
	t.Helper()
	if bin := os.Getenv("TINCANTEST_BIN"); bin != "" {
		return bin
	}
	bin, err := BuildCommand(".", "tincan")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

type built struct {
	once sync.Once
	path string
	err  error
}

// BuildCommand builds the command in pkg (a package path relative to the
// module's root, as go build takes it) into a temporary directory, as
// name, once per process, and returns the binary's path.
func BuildCommand(pkg, name string) (string, error) {
	buildsMu.Lock()
	b := builds[pkg]
	if b == nil {
		b = &built{}
		builds[pkg] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			b.err = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "tincantest-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = errors.New("go build " + pkg + ": " + err.Error() + "\n" + string(out))
		}
	})
	return b.path, b.err
}

// Server is the binary serving on a loopback port. The bbolt file (or the
// -db given in the flags) outlives each process: Restart runs the binary
// again on it and URL follows it to its new port. Every process is killed
// at the end of the test that started the server, its log shown if the
// test failed.
type Server struct {
	t    TB
	bin  string
	argv []string
	env  []string

	mu   sync.Mutex
	url  string
	proc *Process
}

// Process is one process of the binary.
type Process struct {
	Cmd    *exec.Cmd
	lines  chan string // stdout, a line at a time
	stderr *SyncBuffer
	done   chan struct{} // closed once it exited
}

// DefaultFlags are the flags Start gives before the caller's: loopback, a
// file in a temp dir, no TURN, and no rate limits or caps on open streams
// (all of a test's clients are 127.0.0.1). A flag given again wins.
func DefaultFlags(db string) []string {
	return []string{"-addr", "127.0.0.1:0", "-db", db, "-turn=false", "-rate-limit", "0", "-member-rate-limit", "0",
		"-max-streams-per-ip", "0", "-max-streams-per-member", "0"}
}

// Start runs bin with DefaultFlags and flags, and env (NAME=value) as the
// only TINCAN_* variables (the test runner's own are not passed on), and
// waits until it listens and its /healthz answers 200.
func Start(t TB, bin string, env []string, flags ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: bin, argv: append(DefaultFlags(filepath.Join(t.TempDir(), "tincan.db")), flags...)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TINCAN_") {
			s.env = append(s.env, kv)
		}
	}
	s.env = append(s.env, env...)
	s.Restart(t)
	return s
}

// URL is where the current process serves, "http://127.0.0.1:port".
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Restart runs the binary again on the server's file (the process before
// must have ended: Kill or Terminate) and waits for its /healthz.
func (s *Server) Restart(t TB) {
	t.Helper()
	p := s.Spawn(t)
	select {
	case line := <-p.lines:
		url, ok := strings.CutPrefix(line, "tincan listening on ")
		if !ok {
			t.Fatalf("first line on stdout: %q", line)
		}
		s.mu.Lock()
		s.url, s.proc = url, p
		s.mu.Unlock()
	case <-p.done:
		t.Fatalf("the server exited at start (%v):\n%s", p.Cmd.ProcessState, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start within 30s")
	}
	WaitHealthy(t, http.DefaultClient, s.URL())
}

// Spawn starts a process of the binary on the server's file without
// waiting for it and without making it the server's current process (to
// see a second one refused, say).
func (s *Server) Spawn(t TB) *Process {
	t.Helper()
	p := &Process{Cmd: exec.Command(s.bin, s.argv...), lines: make(chan string, 16), stderr: &SyncBuffer{}, done: make(chan struct{})}
	p.Cmd.Env = s.env
	p.Cmd.Stdout, p.Cmd.Stderr = &LineWriter{Lines: p.lines}, p.stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.Cmd.Wait(); close(p.done) }()
	owner := s.t
	owner.Cleanup(func() {
		p.Cmd.Process.Kill()
		<-p.done
		if owner.Failed() {
			owner.Logf("server (pid %d, %v) log:\n%s", p.Cmd.Process.Pid, p.Cmd.ProcessState, LastBytes(p.stderr.String(), 4000))
		}
	})
	return p
}

// Current is the server's current process.
func (s *Server) Current() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Kill sends SIGKILL to the current process and waits until it is gone.
func (s *Server) Kill(t TB) { t.Helper(); s.Current().Kill(t) }

// Kill sends SIGKILL and waits until the process is gone; it fails t if
// the process had ended before.
func (p *Process) Kill(t TB) {
	t.Helper()
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	<-p.done
	if ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the server ended with %v before it was killed:\n%s", p.Cmd.ProcessState, p.stderr)
	}
}

// Terminate sends SIGTERM to the current process and expects exit status
// 0 within limit; it returns how long the exit took.
func (s *Server) Terminate(t TB, limit time.Duration) time.Duration {
	t.Helper()
	p := s.Current()
	began := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if !p.Cmd.ProcessState.Success() {
			t.Errorf("after SIGTERM the server exited with %v", p.Cmd.ProcessState)
		}
	case <-time.After(limit):
		t.Errorf("the server did not exit within %v of SIGTERM", limit)
	}
	return time.Since(began)
}

// Done is closed once the process exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stderr is what the process logged so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// WaitHealthy waits up to 30 s until url's /healthz answers 200.
func WaitHealthy(t TB, hc *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz never answered 200: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LineWriter passes whole lines written to it, trimmed, to Lines; a line
// that finds Lines full is dropped. For a process's stdout, whose first
// line says where it listens.
type LineWriter struct {
	Lines chan string
	mu    sync.Mutex
	buf   bytes.Buffer
}

func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line)
			return len(p), nil
		}
		select {
		case w.Lines <- strings.TrimSpace(line):
		default:
		}
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads: the
// output of a process, a server's log.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// LastBytes is the end of s, at most n bytes, for a log in a failure.
func LastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
