package bench

import (
	"context"
	"fmt"
	"time"
)

// idle: R rooms x 2 peers hold their event streams open and do nothing else
// for -duration; the server sends heartbeats. The result says how much
// server memory the streams took (resident set and Go heap+stacks, measured
// after the joins and again -settle after the streams opened) and how much
// CPU the server spent holding them.
func (b *bench) idle(ctx context.Context, res *Result) error {
	cfg := b.cfg
	life, endLife := context.WithCancel(ctx)
	defer endLife()
	pairs := make([]*pair, cfg.rooms)
	setupStart := time.Now()
	err := parallel(ctx, cfg.rooms, cfg.conc, func(ctx context.Context, i int) error {
		p, err := b.openPair(ctx, life, b.room("i", i, -1), "", nil, nil)
		if err != nil {
			return fmt.Errorf("join room %d: %w", i, err)
		}
		pairs[i] = p
		return nil
	})
	if err != nil {
		b.teardown(ctx, pairs)
		return err
	}
	if !sleep(ctx, time.Second) {
		b.teardown(ctx, pairs)
		return ctx.Err()
	}
	mJoined := b.scrape(ctx)
	on := func(p *pair, m message) { b.arrived(p.l, m) }
	err = parallel(ctx, cfg.rooms, cfg.conc, func(ctx context.Context, i int) error {
		p := pairs[i]
		p.ra = b.receive(life, p.a, "sse", func(m message) { on(p, m) })
		p.rb = b.receive(life, p.b, "sse", func(m message) { on(p, m) })
		if err := p.ra.waitReady(ctx, 4*b.cfg.timeout); err != nil {
			return fmt.Errorf("open stream %d: %w", 2*i, err)
		}
		if err := p.rb.waitReady(ctx, 4*b.cfg.timeout); err != nil {
			return fmt.Errorf("open stream %d: %w", 2*i+1, err)
		}
		return nil
	})
	res.SetupSec = round2(time.Since(setupStart).Seconds())
	res.Streams = 2 * cfg.rooms
	if err != nil {
		b.teardown(ctx, pairs)
		return err
	}
	fmt.Fprintf(b.stderr, "bench: %d streams open after %.1fs; settling %s\n", res.Streams, res.SetupSec, cfg.settle)
	sleep(ctx, cfg.settle)
	mOpen := b.scrape(ctx)

	stopProgress := make(chan struct{})
	pw := b.progress(stopProgress, func() string {
		m := b.scrape(ctx)
		if m == nil {
			return ""
		}
		return fmt.Sprintf(" heartbeats %d server rss %s goroutines %.0f", b.c.heartbeats.Load(), fmtBytes(m[mRSS]), m[mGoroutines])
	})
	start, cpu0 := time.Now(), cpuTime()
	sleep(ctx, cfg.duration)
	elapsed := time.Since(start)
	close(stopProgress)
	pw.Wait()
	mEnd := b.scrape(ctx)
	res.ElapsedSec = round2(elapsed.Seconds())
	res.BenchCPUCores = cores(cpuTime()-cpu0, elapsed)
	// Streams that broke while held count as errors (the receiver says so),
	// but check the count too.
	if n := b.c.streams.Load(); n != int64(res.Streams) {
		b.c.fail(fmt.Sprintf("idle: %d of %d streams open at the end", n, res.Streams))
	}

	b.teardown(ctx, pairs)
	mAfter := b.scrape(ctx)
	res.Server = serverDelta(mOpen, mEnd, elapsed.Seconds())
	if res.Server != nil && mJoined != nil {
		n := float64(res.Streams)
		res.Server.DBBytesBefore = mJoined[mDBBytes]
		res.Server.RSSBytes = mOpen[mRSS]
		res.Server.RSSPerStream = round2((mOpen[mRSS] - mJoined[mRSS]) / n)
		res.Server.HeapPerStream = round2((mOpen[mHeapInuse] - mJoined[mHeapInuse]) / n)
		res.Server.StackPerStream = round2((mOpen[mStackInuse] - mJoined[mStackInuse]) / n)
		res.Server.Goroutines = mOpen[mGoroutines]
		res.Server.GoroutinesPerStr = round2((mOpen[mGoroutines] - mJoined[mGoroutines]) / n)
		res.Server.StreamsOpen = mOpen[mStreamsOpen]
		if mAfter != nil {
			res.Server.DBBytesAfter = mAfter[mDBBytes]
		}
	}
	return ctx.Err()
}

// fill: R rooms x 2 peers; A posts K messages to B in each room and nobody
// reads them or leaves, so that the server holds R rooms, 2R members and
// about R x (K+1) retained messages (K plus B's peer-joined event for A) for
// a restart test. Run the server with a long -client-timeout, or it removes
// the silent members.
func (b *bench) fill(ctx context.Context, res *Result) error {
	cfg := b.cfg
	stop, cancelStop := context.WithTimeout(ctx, cfg.duration)
	defer cancelStop()
	var err error
	m1 := b.measure(ctx, res, func() string { return fmt.Sprintf(" posted %d", b.c.posted.Load()) }, func() {
		err = parallel(stop, cfg.rooms, cfg.conc, func(ctx context.Context, i int) error {
			p, err := b.openPair(ctx, ctx, b.room("f", i, -1), "", nil, nil)
			if err != nil {
				return fmt.Errorf("join room %d: %w", i, err)
			}
			for j := 0; j < cfg.k && ctx.Err() == nil; j++ {
				b.send(ctx, p.a, p.l, func(seq uint64) []byte { return benchBody("fill", seq, cfg.size) })
			}
			return nil
		})
	})
	if res.Server != nil {
		res.Server.DBBytesAfter = m1[mDBBytes]
	}
	return err
}
