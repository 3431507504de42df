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
// against; "none" is the real engine. envKnown, if set, names a test that
// TestBrokenEngine declares a known failure.
const (
	envBreakage = "STORETEST_BREAKAGE"
	envKnown    = "STORETEST_KNOWN"
)

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

// A known failure passes while the test fails, fails once the test
// passes, and must name a test of the suite.
func TestKnownFailure(t *testing.T) {
	for _, tc := range []struct {
		name, breakage, known, test string
		pass                        bool
		report                      string // a line of the output
	}{
		{"still failing", "admit-one-over-capacity", "Join/Capacity", "Join/Capacity", true, "4 of 40 concurrent joins"},
		{"fixed", "none", "Join/FirstMember", "Join/FirstMember", false, "no longer fails"},
		{"no such test", "none", "Join/NoSuchTest", "Join/FirstMember", false, `known failure "Join/NoSuchTest": the suite has no such test`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := runBroken(t, tc.breakage, []string{tc.test}, envKnown+"="+tc.known)
			var exit *exec.ExitError
			if tc.pass && err != nil || !tc.pass && !errors.As(err, &exit) {
				t.Fatalf("known failure %s, test %s on %s: %v, want passing %v\n%s", tc.known, tc.test, tc.breakage, err, tc.pass, out)
			}
			if !strings.Contains(out, tc.report) {
				t.Fatalf("known failure %s, test %s on %s: the output does not say %q:\n%s", tc.known, tc.test, tc.breakage, tc.report, out)
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
	var known []storetest.KnownFailure
	if test := os.Getenv(envKnown); test != "" {
		known = append(known, storetest.KnownFailure{Test: test, Why: "declared by TestKnownFailure"})
	}
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "broken.db")
		return func(opts store.Options) (store.Store, error) { return open(path, opts) }
	}, known...)
}
