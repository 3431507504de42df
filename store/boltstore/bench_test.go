package boltstore

// Benchmarks of the store (issue 6). Run with
//
//	go test -run '^$' -bench . -benchtime 2000x ./store/
//
// BENCHMARKS.md has the numbers and what they mean.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

func benchStore(b *testing.B, opts Options) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// benchRooms makes n rooms of two members each and returns them as pairs.
func benchRooms(b *testing.B, s *Store, n int) [][2]store.Member {
	b.Helper()
	out := make([][2]store.Member, n)
	for i := range out {
		room := fmt.Sprintf("bench-%d", i)
		for j := range 2 {
			jn, err := s.Join(context.Background(), store.JoinRequest{Room: room})
			if err != nil {
				b.Fatal(err)
			}
			out[i][j] = jn.Member
		}
	}
	return out
}

var benchFields = []byte(`"type":"ping","seq":1,"pad":"` + string(make([]byte, 150)) + `"`)

func init() {
	for i := 29; i < len(benchFields)-1; i++ {
		benchFields[i] = 'x'
	}
}

// appendAll posts b.N messages from conc goroutines spread over nrooms
// rooms, and reports writes per commit, commits per second, and the bytes
// the process wrote to disk per message.
func appendAll(b *testing.B, s *Store, conc, nrooms int, keyed bool) {
	rooms := benchRooms(b, s, nrooms)
	c0, w0 := s.Stats()
	io0 := diskWritten()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
				p := store.Post{From: rooms[g%nrooms][0], Messages: []store.Draft{{Fields: benchFields}}}
				if keyed { // as the bench's and the clients' posts are
					p.IdempotencyKey = strconv.FormatInt(n, 36)
				}
				if _, err := appendID(s, context.Background(), p); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	c1, w1 := s.Stats()
	commits := float64(c1 - c0)
	b.ReportMetric(float64(w1-w0)/commits, "writes/commit")
	b.ReportMetric(commits/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if io0 >= 0 {
		b.ReportMetric(float64(diskWritten()-io0)/float64(b.N), "disk-B/msg")
	}
}

// diskWritten is what this process has written to disk so far (Linux
// /proc/self/io write_bytes), or -1 when unknown.
func diskWritten() int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// BenchmarkAppend: one writer waits for every fsync; many writers share
// them (group commit). MaxBatch=1 is the store without group commit. The
// writers post to rooms of their own, as in the pingpong workload, except in
// oneroom, where all post to one room: the difference is what each room a
// commit touches costs (pages rewritten, fsync'd). In keyed, every post
// carries an Idempotency-Key, as the clients' do.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name     string
		conc     int
		rooms    int
		maxBatch int
		keyed    bool
	}{
		{"conc=1", 1, 1, 0, false},
		{"conc=16", 16, 16, 0, false},
		{"conc=128", 128, 128, 0, false},
		{"conc=128/keyed", 128, 128, 0, true},
		{"conc=128/oneroom", 128, 1, 0, false},
		{"conc=128/nogroup", 128, 128, 1, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := benchStore(b, Options{MaxBatch: tc.maxBatch})
			appendAll(b, s, tc.conc, tc.rooms, tc.keyed)
		})
	}
}

// fillRoom appends n messages from a to b's room, many at a time.
func fillRoom(b *testing.B, s *Store, from store.Member, n int) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := appendID(s, context.Background(), store.Post{From: from, Messages: []store.Draft{{Fields: benchFields}}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkReadResume: a reader resumes after a cursor near the end of a big
// room (the common case: an event stream reconnects, or a long-poll comes
// back), and reads the first batch of a full replay from 0.
func BenchmarkReadResume(b *testing.B) {
	const n = 20000 // the default -max-room-messages
	// memory: the newest records are in the delivery cache (the default);
	// disk: no cache, every record comes from a read transaction.
	for _, cache := range []struct {
		name  string
		bytes int
	}{{"memory", 0}, {"disk", -1}} {
		s := benchStore(b, Options{RecentBytes: cache.bytes})
		pair := benchRooms(b, s, 1)[0]
		fillRoom(b, s, pair[0], n)
		last := s.LastID()
		for _, tc := range []struct {
			name  string
			after uint64
			want  int
		}{
			{"tail10", last - 10, 10},
			{"replay256", 0, 256},
		} {
			b.Run(fmt.Sprintf("%s/room=%d/%s", cache.name, n, tc.name), func(b *testing.B) {
				for b.Loop() {
					msgs, _, err := s.Read(ctx0, pair[1], store.ReadRequest{After: tc.after, Limit: 256, Acknowledge: false})
					if err != nil || len(msgs) != tc.want {
						b.Fatalf("read %d messages (%v), want %d", len(msgs), err, tc.want)
					}
				}
			})
		}
		// The cost every wake-up pays when there is nothing new: the sender's
		// own stream of the room reads too.
		b.Run(fmt.Sprintf("%s/room=%d/nothing", cache.name, n), func(b *testing.B) {
			for b.Loop() {
				if msgs, _, err := s.Read(ctx0, pair[0], store.ReadRequest{After: last, Limit: 256, Acknowledge: false}); err != nil || len(msgs) != 0 {
					b.Fatalf("read %d (%v)", len(msgs), err)
				}
			}
		})
	}
}

// BenchmarkPrune: rooms full of acknowledged messages are pruned; and a
// sweep that finds nothing to delete (most sweeps of a busy server whose
// clients never acknowledge, as event streams do not while open).
func BenchmarkPrune(b *testing.B) {
	const rooms, perRoom = 10, 300
	b.Run(fmt.Sprintf("acked/rooms=%d/msgs=%d", rooms, perRoom), func(b *testing.B) {
		s := benchStore(b, Options{})
		pairs := benchRooms(b, s, rooms)
		deleted := 0
		for b.Loop() {
			b.StopTimer()
			for _, p := range pairs {
				fillRoom(b, s, p[0], perRoom)
				if _, _, err := s.Read(ctx0, p[1], store.ReadRequest{After: s.LastID(), Limit: 1, Acknowledge: true}); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			n, err := s.Prune(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			deleted += n
		}
		b.ReportMetric(float64(deleted)/float64(b.N), "deleted/op")
	})
	b.Run(fmt.Sprintf("unacked/rooms=%d/msgs=%d", rooms, perRoom), func(b *testing.B) {
		s := benchStore(b, Options{})
		for _, p := range benchRooms(b, s, rooms) {
			fillRoom(b, s, p[0], perRoom)
		}
		for b.Loop() {
			if n, err := s.Prune(context.Background()); err != nil || n != 0 {
				b.Fatalf("pruned %d (%v)", n, err)
			}
		}
	})
}

// BenchmarkDiskFsync is the disk's price of one durable write: a 4 KiB
// write plus fsync, in the temp dir's file system (the same disk as the
// other benchmarks' bbolt files). A bbolt commit pays two of these (pages,
// then the meta page).
func BenchmarkDiskFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	for i := 0; b.Loop(); i++ {
		if _, err := f.WriteAt(page, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
