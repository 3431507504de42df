package main

// The metric tables of docs/metrics.md (the page the README links for
// metrics) against what /metrics serves: every tincan_ metric a running
// server exports must be documented with its type and labels, and every
// documented one must be served, by the bbolt engine with the embedded
// TURN or by the etcd engine. Prometheus' own go_ and process_ collectors
// are documented as groups. No other page has a metric table.

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// metricFamily is a metric's type and label names, as documented or as
// served (a histogram's le not among them).
type metricFamily struct {
	Type   string
	Labels []string // sorted
}

func (f metricFamily) String() string {
	return f.Type + " {" + strings.Join(f.Labels, ",") + "}"
}

// metricsDoc is the one page with the metric tables.
const metricsDoc = "docs/metrics.md"

// readmeMetricRow is a row of the metric tables:
// | `name` | type | `label`, … or — | meaning |
var readmeMetricRow = regexp.MustCompile("^\\| `(tincan_[a-z0-9_]+)` \\| ([a-z]+) \\| ([^|]*) \\| [^|]*\\S[^|]* \\|$")

// readmeMetrics reads the metric tables of metricsDoc, and fails the test
// when another Markdown page of the repository has a metric row (one
// table, in one place).
func readmeMetrics(t *testing.T) (map[string]metricFamily, string) {
	t.Helper()
	data, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for _, f := range docFiles(t) {
		if filepath.ToSlash(f) == metricsDoc {
			continue
		}
		other, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(other), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "| `tincan_") {
				t.Errorf("%s has a metric row; the metric tables are in %s alone: %s", f, metricsDoc, line)
			}
		}
	}
	documented := map[string]metricFamily{}
	for _, line := range strings.Split(readme, "\n") {
		m := readmeMetricRow.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			if strings.HasPrefix(line, "| `tincan_") {
				t.Errorf(metricsDoc+": a metric row not in the form | `name` | type | `labels` or — | meaning |: %s", line)
			}
			continue
		}
		f := metricFamily{Type: m[2]}
		if labels := strings.TrimSpace(m[3]); labels != "—" {
			for _, l := range strings.Split(labels, ",") {
				f.Labels = append(f.Labels, strings.Trim(strings.TrimSpace(l), "`"))
			}
			slices.Sort(f.Labels)
		}
		if _, dup := documented[m[1]]; dup {
			t.Errorf("%s documents %s twice", metricsDoc, m[1])
		}
		documented[m[1]] = f
	}
	if len(documented) < 10 {
		t.Fatalf("%s: only %d metric rows found", metricsDoc, len(documented))
	}
	return documented, readme
}

var (
	typeLine   = regexp.MustCompile(`^# TYPE (\S+) (\S+)$`)
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+`)
	labelName  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
)

// scrapeFamilies reads the server's /metrics into families: each # TYPE
// line, and the label names of its samples (the _bucket, _sum and _count
// samples of a histogram or summary are its own).
func scrapeFamilies(t *testing.T, e *endpoint) map[string]metricFamily {
	t.Helper()
	a := e.do(t, "GET", "/metrics", "")
	if a.Status != 200 {
		t.Fatalf("GET /metrics: %d %s", a.Status, a.Body)
	}
	families := map[string]metricFamily{}
	labels := map[string]map[string]bool{}
	for _, line := range strings.Split(string(a.Body), "\n") {
		if m := typeLine.FindStringSubmatch(line); m != nil {
			families[m[1]] = metricFamily{Type: m[2]}
			labels[m[1]] = map[string]bool{}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil || strings.HasPrefix(line, "#") {
			continue
		}
		name := m[1]
		if _, ok := families[name]; !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut && (families[base].Type == "histogram" || families[base].Type == "summary") {
					name = base
				}
			}
		}
		if _, ok := families[name]; !ok {
			t.Errorf("/metrics: sample %q of no # TYPE", line)
			continue
		}
		for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
			if l[1] != "le" && l[1] != "quantile" {
				labels[name][l[1]] = true
			}
		}
	}
	for name, f := range families {
		for l := range labels[name] {
			f.Labels = append(f.Labels, l)
		}
		slices.Sort(f.Labels)
		families[name] = f
	}
	return families
}

// metricsTraffic makes the server count a bit of everything: joins (one
// with a wrong password), messages posted and delivered by SSE and by
// long-poll, a refusal.
func metricsTraffic(t *testing.T, e *endpoint) {
	t.Helper()
	const room = "metrics"
	join := func(password string, wantStatus int) *client {
		a := e.do(t, "POST", "/rooms/"+room+"/join", `{"password":"`+password+`"}`)
		if a.Status != wantStatus {
			t.Fatalf("join with password %q: %d %s, want %d", password, a.Status, a.Body, wantStatus)
		}
		c := &client{ep: e, Room: room}
		if wantStatus == 201 {
			a.json(t, &c.joinAnswer)
		}
		return c
	}
	alice := join("right", 201)
	join("wrong", 403)
	bob := join("right", 201)
	stream := alice.events(t, "")
	stream.ready(t)
	bob.post(t, `{"type":"hello"}`)
	for _, want := range []string{"peer-joined", "hello"} {
		if m := stream.message(t); m["type"] != want {
			t.Fatalf("alice's stream brought %v, want a %s", m, want)
		}
	}
	alice.post(t, `{"type":"hello"}`)
	if got := bob.poll(t, 0, "5"); len(got.Messages) == 0 {
		t.Fatal("bob's long-poll brought nothing")
	}
	if a := e.do(t, "GET", "/no-such-path", ""); a.Status != 404 {
		t.Fatalf("GET /no-such-path: %d", a.Status)
	}
}

// TestReadmeMetrics holds the metric tables of docs/metrics.md to what /metrics
// serves after some traffic, over bbolt with the embedded TURN and over
// etcd.
func TestReadmeMetrics(t *testing.T) {
	documented, readme := readmeMetrics(t)
	for _, group := range []string{"`go_*`", "`process_*`"} {
		if !strings.Contains(readme, group) {
			t.Errorf("%s does not mention the %s metrics", metricsDoc, group)
		}
	}
	served := map[string]bool{}
	check := func(t *testing.T, e *endpoint) {
		metricsTraffic(t, e)
		for name, f := range scrapeFamilies(t, e) {
			if !strings.HasPrefix(name, "tincan_") {
				if !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
					t.Errorf("/metrics serves %s (%v): neither tincan_, go_ nor process_, and %s does not say", name, f, metricsDoc)
				}
				continue
			}
			served[name] = true
			doc, ok := documented[name]
			switch {
			case !ok:
				t.Errorf("/metrics serves %s (%v), which %s does not document", name, f, metricsDoc)
			case doc.String() != f.String():
				t.Errorf("%s: %s says %v, /metrics serves %v", name, metricsDoc, doc, f)
			}
		}
	}
	t.Run("bbolt with TURN and webhooks", func(t *testing.T) {
		receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
		t.Cleanup(receiver.Close)
		srv := newTestServer(t, withFlags("-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", "127.0.0.1"),
			withEnv("TINCAN_WEBHOOK_URL", receiver.URL), withEnv("TINCAN_WEBHOOK_SECRET", testWebhookSecret))
		check(t, srv.endpoint)
	})
	t.Run("etcd", func(t *testing.T) {
		etcd := etcdtest.Start(t, etcdtest.Config{Members: 1})
		srv := newTestServer(t, withFlags("-etcd", strings.Join(etcd.Endpoints(), ","), "-etcd-prefix", "/metrics-test/"))
		check(t, srv.endpoint)
	})
	for name := range documented {
		if !served[name] {
			t.Errorf("%s documents %s, which /metrics serves neither over bbolt nor over etcd", metricsDoc, name)
		}
	}
}
