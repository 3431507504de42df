package storetest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// KnownFailure is a test of the suite that an engine fails today, for a
// bug whose fix has not landed yet. Run still runs it and turns the
// outcome around: it logs the test's failures and passes while they last,
// and fails as soon as the test passes, so that the entry goes with the
// fix. The failure stays written in the engine's test, and asserted, rather
// than turning every test run red or being skipped.
type KnownFailure struct {
	Test string // the test's name under Run, e.g. "Lifecycle/CallsAfterClose"
	Why  string // the bug, in a few words
}

// expectFailure runs test on a recorder in place of t, in a goroutine of
// its own (a Fatal on the recorder ends that goroutine only), and reports
// on t whether it failed as k says it does.
func expectFailure(t *testing.T, k KnownFailure, test func(tb testing.TB)) {
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		test(rec)
	}()
	<-done
	if !rec.Failed() {
		t.Errorf("known failure (%s) no longer fails: the bug is fixed, remove it from the engine's KnownFailure list", k.Why)
		return
	}
	t.Logf("known failure (%s), as expected:\n%s", k.Why, strings.Join(rec.failures, "\n"))
}

// recorder is a testing.TB that records failures instead of reporting
// them; everything else (Cleanup, TempDir, Context, Log) goes to the
// test it wraps.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	failures []string
	failed   bool
}

func (r *recorder) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	if msg != "" {
		r.failures = append(r.failures, msg)
	}
}

func (r *recorder) Fail()                             { r.fail("") }
func (r *recorder) Error(args ...any)                 { r.fail(fmt.Sprint(args...)) }
func (r *recorder) Errorf(format string, args ...any) { r.fail(fmt.Sprintf(format, args...)) }
func (r *recorder) FailNow()                          { r.Fail(); runtime.Goexit() }
func (r *recorder) Fatal(args ...any)                 { r.Error(args...); runtime.Goexit() }
func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...); runtime.Goexit() }

func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}
