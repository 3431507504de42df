package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// metrics is one scrape of the server's /metrics: sample name (with its
// labels, as written) to value. Only unlabelled samples and the few labelled
// ones the bench needs are kept.
type metrics map[string]float64

// The samples the bench reads.
const (
	mCommitWritesSum   = "tincan_commit_writes_sum"
	mCommitWritesCount = "tincan_commit_writes_count"
	mCommitSecondsSum  = "tincan_commit_seconds_sum"
	mDBBytes           = "tincan_db_bytes"
	mRSS               = "process_resident_memory_bytes"
	mCPU               = "process_cpu_seconds_total"
	mGoroutines        = "go_goroutines"
	mHeapInuse         = "go_memstats_heap_inuse_bytes"
	mStackInuse        = "go_memstats_stack_inuse_bytes"
	mStreamsOpen       = "tincan_streams_open"
	mMallocs           = "go_memstats_mallocs_total"
)

// scrape reads base's /metrics (not part of the client package: the
// server's operators read it, not applications).
func scrape(ctx context.Context, hc *http.Client, base string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// parseMetrics reads the Prometheus text format: "name{labels} value [ts]".
func parseMetrics(r io.Reader) (metrics, error) {
	m := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var name, rest string
		if i := strings.IndexByte(line, '}'); i >= 0 && strings.IndexByte(line, '{') >= 0 && strings.IndexByte(line, '{') < i {
			name, rest = line[:i+1], line[i+1:]
		} else {
			name, rest, _ = strings.Cut(line, " ")
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		m[name] = v
	}
	return m, sc.Err()
}

// has reports whether the scrape carried a sample.
func (m metrics) has(name string) bool { _, ok := m[name]; return ok }

// serverDelta summarises what the server did between two scrapes taken
// seconds apart: group commits, CPU.
func serverDelta(before, after metrics, seconds float64) *Server {
	if before == nil || after == nil {
		return nil
	}
	s := &Server{
		Commits:       after[mCommitWritesCount] - before[mCommitWritesCount],
		Writes:        after[mCommitWritesSum] - before[mCommitWritesSum],
		DBBytesBefore: before[mDBBytes],
		DBBytesAfter:  after[mDBBytes],
		RSSBytes:      after[mRSS],
		Goroutines:    after[mGoroutines],
		StreamsOpen:   after[mStreamsOpen],
	}
	if s.Commits > 0 {
		s.WritesPerCommit = round2(s.Writes / s.Commits)
		s.CommitMeanMs = round2((after[mCommitSecondsSum] - before[mCommitSecondsSum]) / s.Commits * 1000)
	}
	if after.has(mCPU) {
		s.CPUSeconds = after[mCPU] - before[mCPU]
	}
	if after.has(mMallocs) {
		s.Mallocs = after[mMallocs] - before[mMallocs]
	}
	if seconds > 0 && after.has(mCPU) {
		s.CPUCores = round2((after[mCPU] - before[mCPU]) / seconds)
	}
	return s
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }
