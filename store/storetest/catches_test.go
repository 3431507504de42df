package storetest_test

import (
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/storetest"
)

// envBreakage names, for TestBrokenEngine, the breakage to run the suite
// against; "none" is the real engine.
const envBreakage = "STORETEST_BREAKAGE"

// The suite fails on each broken engine, in the test meant to catch its
// breakage, and passes those same tests on the real engine. Each run is
// this test binary again (a failing suite cannot be observed from inside
// the test that runs it), limited to the tests concerned.
func TestSuiteCatchesBrokenEngines(t *testing.T) {
	names := slices.Sorted(maps.Keys(breakages))
	var all []string
	for _, name := range names {
		all = append(all, breakages[name].catches)
	}

	t.Run("none", func(t *testing.T) {
		t.Parallel()
		out, err := runBroken(t, "none", all)
		if err != nil {
			t.Fatalf("the suite fails on the real engine: %v\n%s", err, out)
		}
		for _, test := range all {
			if !reported(out, "PASS", test) {
				t.Errorf("%s did not pass on the real engine", test)
			}
		}
		if t.Failed() {
			t.Logf("output:\n%s", out)
		}
	})
	for _, name := range names {
		b := breakages[name]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, err := runBroken(t, name, []string{b.catches})
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite on an engine that does %s: %v, want a failing exit\n%s", name, err, out)
			}
			if !reported(out, "FAIL", b.catches) {
				t.Fatalf("the suite on an engine that does %s does not report %s failing:\n%s", name, b.catches, out)
			}
		})
	}
}

// runBroken runs TestBrokenEngine in a new process of this test binary,
// against the named breakage, limited to the given tests of the suite, with
// env added to the environment.
func runBroken(t *testing.T, breakage string, tests []string, env ...string) (string, error) {
	var groups, names []string
	for _, test := range tests {
		group, name, _ := strings.Cut(test, "/")
		groups, names = append(groups, regexp.QuoteMeta(group)), append(names, regexp.QuoteMeta(name))
	}
	pattern := "^TestBrokenEngine$/^(" + strings.Join(groups, "|") + ")$/^(" + strings.Join(names, "|") + ")$"
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+pattern, "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(append(os.Environ(), envBreakage+"="+breakage), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// reported tells whether the output of go test -v reports test (as Run
// names it) with the given result.
func reported(out, result, test string) bool {
	return regexp.MustCompile(`(?m)^\s*--- ` + result + `: TestBrokenEngine/` + regexp.QuoteMeta(test) + ` \(`).MatchString(out)
}

// TestBrokenEngine runs the suite against the breakage that envBreakage
// names; only TestSuiteCatchesBrokenEngines runs it so.
func TestBrokenEngine(t *testing.T) {
	name := os.Getenv(envBreakage)
	if name == "" {
		t.Skip("run by TestSuiteCatchesBrokenEngines, with " + envBreakage + " set")
	}
	open := openBolt
	if name != "none" {
		b, ok := breakages[name]
		if !ok {
			t.Fatalf("no breakage %q", name)
		}
		open = b.open
	}
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "broken.db")
		return func(opts store.Options) (store.Store, error) { return open(path, opts) }
	})
}
