package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tincan/tincan/client"
)

// pair is a room with two members, each receiving in the background.
type pair struct {
	name   string
	a, b   *client.Member
	ra, rb *receiver
	l      *ledger
}

// openPair joins two members to a new room and starts their receivers,
// handing their messages to onA and onB. It waits until both listen.
func (b *bench) openPair(ctx, life context.Context, name, transport string, onA, onB func(*pair, message)) (*pair, error) {
	p := &pair{name: name, l: newLedger()}
	var err error
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	if p.a, err = b.cl.Join(octx, name, client.JoinOptions{}); err != nil {
		return nil, err
	}
	if p.b, err = b.cl.Join(octx, name, client.JoinOptions{}); err != nil {
		b.leave(ctx, p.a)
		return nil, err
	}
	if transport == "" {
		return p, nil
	}
	p.ra = b.receive(life, p.a, transport, func(m message) { onA(p, m) })
	p.rb = b.receive(life, p.b, transport, func(m message) { onB(p, m) })
	if err := p.ra.waitReady(ctx, b.cfg.timeout); err != nil {
		b.closePair(ctx, p)
		return nil, err
	}
	if err := p.rb.waitReady(ctx, b.cfg.timeout); err != nil {
		b.closePair(ctx, p)
		return nil, err
	}
	return p, nil
}

// closePair makes both members leave (the last one deletes the room) and
// ends their receivers.
func (b *bench) closePair(ctx context.Context, p *pair) {
	for _, x := range []struct {
		p *client.Member
		r *receiver
	}{{p.a, p.ra}, {p.b, p.rb}} {
		if x.p == nil {
			continue
		}
		if x.r != nil {
			x.r.closing.Store(true)
		}
		b.leave(ctx, x.p)
		if x.r != nil {
			x.r.finish(time.Second)
		}
	}
}

func (b *bench) leave(ctx context.Context, p *client.Member) {
	octx, cancel := b.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	if err := p.Leave(octx); err != nil {
		b.c.fail(kind("leave", err))
	}
}

// pingpong: R rooms x 2 peers; in each room A posts a ping, B answers with a
// pong as soon as the ping arrives, A measures the round trip, pauses -think,
// and goes again, K times.
func (b *bench) pingpong(ctx context.Context, res *Result) error {
	cfg := b.cfg
	life, endLife := context.WithCancel(ctx)
	defer endLife()

	type state struct {
		pong chan time.Time
	}
	states := make([]*state, cfg.rooms)
	pairs := make([]*pair, cfg.rooms)
	onA := func(i int) func(p *pair, m message) {
		return func(p *pair, m message) {
			if typ, ok := b.arrived(p.l, m); ok && typ == "pong" {
				select {
				case states[i].pong <- m.at:
				default:
				}
			}
		}
	}
	onB := func(p *pair, m message) {
		if typ, ok := b.arrived(p.l, m); ok && typ == "ping" {
			b.send(life, p.b, p.l, func(seq uint64) []byte { return benchBody("pong", seq, cfg.size) })
		}
	}

	setupStart := time.Now()
	err := parallel(ctx, cfg.rooms, cfg.conc, func(ctx context.Context, i int) error {
		states[i] = &state{pong: make(chan time.Time, 4)}
		p, err := b.openPair(ctx, life, b.room("p", i, -1), cfg.transport, onA(i), onB)
		if err != nil {
			return fmt.Errorf("set up room %d: %w", i, err)
		}
		pairs[i] = p
		return nil
	})
	res.SetupSec = round2(time.Since(setupStart).Seconds())
	if err != nil {
		b.teardown(ctx, pairs)
		return err
	}
	stop, cancelStop := context.WithTimeout(ctx, cfg.duration)
	defer cancelStop()
	b.measure(ctx, res, nil, func() {
		var wg sync.WaitGroup
		for i, p := range pairs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.pingpongRoom(ctx, stop, p, states[i].pong)
			}()
		}
		wg.Wait()
	})

	b.teardown(ctx, pairs)
	m2 := b.scrape(ctx)
	if res.Server != nil && m2 != nil {
		res.Server.DBBytesAfter = m2[mDBBytes]
	}
	return ctx.Err()
}

// pingpongRoom runs one room's round trips until K are done, -count or
// -duration is used up (stop), or ctx ends.
func (b *bench) pingpongRoom(ctx, stop context.Context, p *pair, pong <-chan time.Time) {
	cfg := b.cfg
	if cfg.think > 0 { // spread the rooms over the pause so they do not beat in step
		if !sleep(stop, time.Duration(rand.Int64N(int64(cfg.think)))) {
			return
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	failures := 0
	for i := 0; i < cfg.k && stop.Err() == nil && failures < 10 && b.take(); i++ {
		start := time.Now()
		if !b.send(ctx, p.a, p.l, func(seq uint64) []byte { return benchBody("ping", seq, cfg.size) }) {
			failures++
			sleep(stop, 10*time.Millisecond)
			continue
		}
		timer.Reset(cfg.timeout)
		select {
		case at := <-pong:
			b.rtt.add(at.Sub(start))
			b.c.roundTrips.Add(1)
			failures = 0
		case <-timer.C:
			// The ping or the pong never came: every message of the room
			// still outstanding is lost.
			b.c.lost.Add(int64(p.l.expire()))
			failures++
		case <-ctx.Done():
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if cfg.think > 0 && !sleep(stop, cfg.think) {
			return
		}
	}
	if failures >= 10 {
		b.c.fail("room abandoned after 10 failed round trips")
	}
}

// teardown closes every pair (in parallel) and counts what never arrived.
func (b *bench) teardown(ctx context.Context, pairs []*pair) {
	tctx := context.WithoutCancel(ctx)
	parallel(tctx, len(pairs), b.cfg.conc, func(ctx context.Context, i int) error {
		if p := pairs[i]; p != nil {
			b.closePair(ctx, p)
			b.c.lost.Add(int64(p.l.expire()))
		}
		return nil
	})
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
