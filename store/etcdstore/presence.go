package etcdstore

import (
	"context"
	"errors"
	"math"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tincan/tincan/store"
)

// Presence across the cluster. Every member has a lease of the client
// timeout, taken at its join (from a pool granted ahead, see lease), that
// holds its live key. An instance renews the leases of the members it
// sees: while one holds (a stream or long-poll open), every quarter of the
// lease; after a Touch or a release, once, at most a second (touchEvery)
// later than the renewal before it, so a lease never expires sooner than
// the client timeout after the last sign of life nor more than a second
// and a tick later, and a member's requests cost a renewal a second at
// most. Renewals travel on one keep-alive stream per instance; etcd's
// leader handles them without a log write.
//
// When a lease lapses, etcd deletes the live key; every instance's watch
// shows it, and the reaper of each tries to remove the member (Leave with
// ReasonTimeout) in a transaction that requires the live key to be still
// gone and the member still there: one succeeds, the others find the
// member gone. The reaper also sweeps the mirror every tick for members
// without a live key, so a removal that failed is tried again.
//
// A lease can go under a member that is alive: its instance could not
// reach etcd in time, or etcd revoked it wrongly (a leader stopped with
// SIGSTOP or a paused VM resumes, still believes it leads for a moment and
// revokes the leases that expired by its clock; the new leader applies
// the revocations; etcd#15247 guards a leader whose raft loop was blocked,
// not one whose whole process was: the fault suite's StopLeader found it).
// So an instance that holds a member, or saw it within the client timeout,
// gives it a new lease as soon as its watch shows the live key gone, and
// the reapers leave a member alone for lapseGrace after they saw its live
// key go, so that the holder gets there first: its new live key makes
// their transactions fail.
//
// Restart: each instance keeps a key on a lease of its own (instanceTTL),
// revoked by Close. An instance that opens and finds no other instance's
// key gives every member a new lease of the whole client timeout, one
// lease shared by all of them (one grant, not one per member); a member
// seen later by any instance moves to a lease of its own, and those never
// seen again lapse together with the shared one.

// instanceTTL is the lease of an instance's key, in seconds: an instance
// killed without Close stops counting as running after this.
const instanceTTL = 5

type presence struct {
	s     *Store
	ttl   int64         // member leases, in seconds, as asked of etcd
	every time.Duration // renewal interval of a held member: a quarter of the lease
	// touchEvery: renewal interval of a member seen (a request, a release)
	// but not held: at most a second, so that its lease ends at most a
	// second and a tick later than the client timeout after its last sign
	// of life (the API promises its removal within the timeout + 5 s).
	touchEvery time.Duration
	// lapseGrace: how long reapers leave a member whose live key went to
	// an instance that holds it (see above).
	lapseGrace time.Duration
	kick       chan struct{} // wakes the reaper
	renewNow   chan struct{} // wakes the renewer
	revokes    chan clientv3.LeaseID
	pool       chan pooledLease // leases granted ahead, for joins
	taken      chan struct{}    // wakes the pool's filler

	instance       atomic.Int64              // this instance's lease
	instanceLapsed atomic.Bool               // and etcd said it is gone
	stream         atomic.Pointer[keepAlive] // the renewals' stream of the moment

	mu    sync.Mutex
	local map[store.Member]*liveness
}

// liveness is what this instance saw of a member.
type liveness struct {
	open    int       // holds not yet released
	seen    time.Time // last Touch or release
	renewed time.Time // last renewal sent
	// listened: last time it was held here (a Hold, its release, or a
	// tick of the listen keys while held); zero if never.
	listened time.Time
}

// within reports whether the member is held, or was seen less than
// timeout ago.
func (l *liveness) within(timeout time.Duration) bool {
	return l != nil && (l.open > 0 || time.Since(l.seen) < timeout)
}

func newPresence(s *Store) *presence {
	ttl := max(1, int64(math.Ceil(s.opts.ClientTimeout.Seconds())))
	every := time.Duration(ttl) * time.Second / 4
	return &presence{
		s:          s,
		ttl:        ttl,
		every:      every,
		touchEvery: min(every, time.Second),
		lapseGrace: min(every, time.Second),
		kick:       make(chan struct{}, 1),
		renewNow:   make(chan struct{}, 1),
		revokes:    make(chan clientv3.LeaseID, 4096),
		pool:       make(chan pooledLease, poolSize),
		taken:      make(chan struct{}, 1),
		local:      map[store.Member]*liveness{},
	}
}

// tick is how often the renewer and the reaper run.
func (p *presence) tick() time.Duration { return min(max(p.every/2, 50*time.Millisecond), time.Second) }

// Touch implements store.Store.
func (s *Store) Touch(m store.Member) { s.presence.Touch(m) }

// Hold implements store.Store.
func (s *Store) Hold(m store.Member) (release func()) { return s.presence.Hold(m) }

func (p *presence) get(m store.Member) *liveness {
	l := p.local[m]
	if l == nil {
		l = &liveness{seen: time.Now()}
		p.local[m] = l
	}
	return l
}

func (p *presence) Touch(m store.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(m).seen = time.Now()
}

func (p *presence) Hold(m store.Member) (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.get(m)
	l.open++
	l.listened = time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.local[m] == l { // a member that left while listening is not brought back
				l.open--
				l.seen = time.Now()
				l.listened = l.seen
			}
		})
	}
}

// joined starts tracking a member that just joined, on a lease granted
// just now (fresh) or a while ago (from the pool: then it is renewed at
// the next tick).
func (p *presence) joined(m store.Member, fresh bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	l := p.get(m)
	l.seen = now
	if fresh {
		l.renewed = now
	}
}

func (p *presence) forget(m store.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.local, m)
}

// alive reports whether this instance saw m within the client timeout.
func (p *presence) alive(m store.Member) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.local[m].within(p.s.opts.ClientTimeout)
}

func (p *presence) kickReaper() { signal(p.kick) }

// signal sends on c unless a signal is already waiting there.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// lapsed hears that the live keys of ms went (a lease lapsed or was
// revoked), or that a reload found them missing: those this instance
// holds or saw within the client timeout get a lease again at once.
func (p *presence) lapsed(ms []store.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	due := 0
	for _, m := range ms {
		if l := p.local[m]; l.within(p.s.opts.ClientTimeout) {
			l.renewed = time.Time{} // due now
			due++
		}
	}
	if due > 0 {
		p.s.log.Info("leases of live members went: they get new ones", "members", due)
		signal(p.renewNow)
	}
	p.kickReaper()
}

// grant makes a member lease.
func (p *presence) grant(ctx context.Context) (clientv3.LeaseID, error) {
	start := time.Now()
	resp, err := p.s.client.Grant(ctx, p.ttl)
	p.s.metrics.observe("grant", start)
	if err != nil {
		return 0, err
	}
	return resp.ID, nil
}

// A join takes its member's lease from a pool of leases granted ahead, so
// that it waits for one etcd commit, not two. A pooled lease is used
// within half its TTL of its grant or revoked; the member's first renewal
// follows within a tick of its join.
type pooledLease struct {
	id      clientv3.LeaseID
	granted time.Time
}

// poolSize is how many leases the pool holds: enough for the joins of 50
// call setups at once (two each) to find one mostly, rather than wait
// for a grant of their own (BENCHMARKS §11).
const poolSize = 64

// maxPooled is how long a pooled lease may wait for a join.
func (p *presence) maxPooled() time.Duration { return time.Duration(p.ttl) * time.Second / 2 }

// lease returns a member lease: from the pool (fresh false) or granted
// now.
func (p *presence) lease(ctx context.Context) (id clientv3.LeaseID, fresh bool, err error) {
	for {
		select {
		case l := <-p.pool:
			signal(p.taken)
			if time.Since(l.granted) > p.maxPooled() {
				p.revoke(l.id)
				continue
			}
			return l.id, false, nil
		default:
			id, err := p.grant(ctx)
			return id, true, err
		}
	}
}

// fillLoop keeps the pool full of leases young enough, until Close.
func (p *presence) fillLoop() {
	defer p.s.wg.Done()
	t := time.NewTicker(max(p.maxPooled()/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		// Leases too old for a join go back. Joins take from the pool
		// meanwhile: never wait for it.
	expire:
		for range len(p.pool) {
			select {
			case l := <-p.pool:
				if time.Since(l.granted) > p.maxPooled()/2 {
					p.revoke(l.id)
					continue
				}
				p.pool <- l // this loop is the only sender: there is room
			default:
				break expire
			}
		}
		for len(p.pool) < cap(p.pool) && p.s.ctx.Err() == nil {
			ctx, cancel := p.s.opContext(p.s.ctx)
			id, err := p.grant(ctx)
			cancel()
			if err != nil {
				break // etcd is unwell; joins grant their own meanwhile
			}
			p.pool <- pooledLease{id, time.Now()}
		}
		select {
		case <-t.C:
		case <-p.taken:
		case <-p.s.ctx.Done():
			return
		}
	}
}

// flushPool empties the pool: its leases may have been revoked (see
// errLeaseGone). The filler grants new ones.
func (p *presence) flushPool() {
	for range len(p.pool) {
		select {
		case l := <-p.pool:
			p.revoke(l.id)
		default:
		}
	}
	signal(p.taken)
}

// revoke gives a lease back, in the background; a lease that cannot be
// revoked now lapses by itself.
func (p *presence) revoke(lease clientv3.LeaseID) {
	if lease == 0 {
		return
	}
	select {
	case p.revokes <- lease:
	default:
	}
}

// start registers this instance, gives everybody the whole timeout if no
// other instance runs, and starts the renewer, the reaper and the revoker.
func (p *presence) start(ctx context.Context) error {
	others := p.s.mirror.otherInstances(p.s.self)
	if err := p.register(ctx); err != nil {
		return err
	}
	if others == 0 {
		if err := p.restartAll(ctx); err != nil {
			return err
		}
	}
	p.s.wg.Add(5)
	go p.listenLoop()
	go p.renewLoop()
	go p.reapLoop()
	go p.revokeLoop()
	go p.fillLoop()
	return nil
}

// register writes this instance's key on a lease of its own.
func (p *presence) register(ctx context.Context) error {
	octx, cancel := p.s.opContext(ctx)
	defer cancel()
	resp, err := p.s.client.Grant(octx, instanceTTL)
	if err != nil {
		return err
	}
	if _, err := p.s.client.Put(octx, p.s.keys.instance(p.s.self), "", clientv3.WithLease(resp.ID)); err != nil {
		return err
	}
	p.instance.Store(int64(resp.ID))
	return nil
}

// stop revokes this instance's lease, so that its key goes at once, and
// the pooled leases. Called before the background work stops.
func (p *presence) stop(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var wg sync.WaitGroup
	revoke := func(lease clientv3.LeaseID) { wg.Go(func() { p.s.client.Revoke(ctx, lease) }) }
	if lease := clientv3.LeaseID(p.instance.Load()); lease != 0 {
		revoke(lease)
	}
	for range len(p.pool) {
		select {
		case l := <-p.pool:
			revoke(l.id)
		default:
		}
	}
	wg.Wait()
}

// restartAll gives every member one new shared lease of the whole client
// timeout.
func (p *presence) restartAll(ctx context.Context) error {
	members := p.s.mirror.members(false)
	if len(members) == 0 {
		return nil
	}
	octx, cancel := p.s.opContext(ctx)
	defer cancel()
	lease, err := p.grant(octx)
	if err != nil {
		return err
	}
	const perTxn = 64
	start := time.Now()
	var rev int64
	for chunk := range chunks(members, perTxn) {
		ops := make([]clientv3.Op, 0, len(chunk))
		for _, m := range chunk {
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(p.s.keys.member(m.Room, m.ID)), "=", m.joined)},
				[]clientv3.Op{clientv3.OpPut(p.s.keys.live(m.Room, m.ID), sharedLease, clientv3.WithLease(lease))}, nil))
		}
		resp, err := p.s.client.Txn(octx).Then(ops...).Commit()
		if err != nil {
			return err
		}
		rev = resp.Header.Revision
	}
	p.s.settle(octx, rev, start)
	for _, m := range members {
		if m.live && !m.shared {
			p.revoke(clientv3.LeaseID(m.lease)) // holds nothing now
		}
	}
	p.s.log.Info("no other instance runs: every member has the whole client timeout again", "members", len(members))
	return nil
}

func chunks[T any](all []T, n int) func(yield func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(all) > 0 {
			c := all[:min(n, len(all))]
			all = all[len(c):]
			if !yield(c) {
				return
			}
		}
	}
}

// renewLoop renews this instance's lease and the leases of the members it
// sees, until Close.
func (p *presence) renewLoop() {
	defer p.s.wg.Done()
	t := time.NewTicker(p.tick())
	defer t.Stop()
	var ka *keepAlive
	defer func() { ka.close() }()
	var instanceRenewed time.Time
	for {
		select {
		case <-t.C:
		case <-p.renewNow:
		case <-p.s.ctx.Done():
			return
		}
		if ka == nil || ka.broken() {
			var avoid *node
			if ka != nil {
				avoid = ka.node
				if ns := p.s.nodes; ns != nil && ka.silent.Load() {
					// Ask the member as a call left unanswered does, so
					// that a silent one is suspect (and not picked) by the
					// time the next stream breaks.
					ns.spawn(func() { ns.judge(p.s.ctx, avoid, 0) })
				}
				p.resend(ka.opened)
			}
			ka.close()
			var err error
			if ka, err = p.openKeepAlive(avoid); err != nil {
				ka = nil
				continue
			}
			p.stream.Store(ka)
		}
		if time.Since(instanceRenewed) >= instanceTTL*time.Second/3 {
			if p.instanceLapsed.Load() {
				if err := p.register(p.s.ctx); err == nil {
					p.instanceLapsed.Store(false)
				}
			}
			if ka.send(clientv3.LeaseID(p.instance.Load())) {
				instanceRenewed = time.Now()
			}
		}
		p.renewMembers(ka)
	}
}

// resend makes the renewals sent since a broken stream opened due again:
// they may have been lost with it.
func (p *presence) resend(since time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.local {
		switch {
		case l.renewed.Before(since):
		case l.open > 0:
			l.renewed = time.Time{}
		case !l.seen.After(l.renewed):
			l.renewed = l.seen.Add(-time.Nanosecond) // due for its last sign of life, as before
		}
	}
}

// renewMembers renews the leases that are due.
func (p *presence) renewMembers(ka *keepAlive) {
	now := time.Now()
	type due struct {
		m    store.Member
		l    *liveness
		prev time.Time
	}
	var jobs []due
	p.mu.Lock()
	for m, l := range p.local {
		since := now.Sub(l.renewed)
		held := l.open > 0
		fresh := l.seen.After(l.renewed) // a sign of life since the last renewal
		if due := held && since >= p.every || !held && fresh && since >= p.touchEvery; !due {
			if !held && !fresh && now.Sub(l.seen) > 2*p.s.opts.ClientTimeout {
				delete(p.local, m) // silent here for long: its lease is not ours to keep
			}
			continue
		}
		jobs = append(jobs, due{m, l, l.renewed})
		l.renewed = now
	}
	p.mu.Unlock()
	retry := func(j due) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if j.l.renewed == now {
			j.l.renewed = j.prev // try again at the next tick
		}
	}
	// Renewals go on the stream one after the other; new leases (after a
	// restart, every member that comes back needs one) a few at a time.
	const parallel = 16
	slots := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, j := range jobs {
		ref, member := p.s.mirror.presence(j.m)
		switch {
		case !member:
			retry(j) // not a member (yet) as far as this instance knows
		case !ref.live || ref.shared:
			// Lapsed while seen here (back, unless a reaper is first), or
			// on a restart's lease: a lease of its own.
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				if !p.attach(j.m, ref, ref.live) {
					retry(j)
				}
			})
		case !ka.send(clientv3.LeaseID(ref.lease)):
			retry(j)
		}
	}
	wg.Wait()
}

// attach gives m a lease of its own: in place of the shared one
// (fromShared), or in place of one that lapsed.
func (p *presence) attach(m store.Member, ref memberRef, fromShared bool) bool {
	ctx, cancel := p.s.opContext(p.s.ctx)
	defer cancel()
	lease, err := p.grant(ctx)
	if err != nil {
		return false
	}
	live := p.s.keys.live(m.Room, m.ID)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(p.s.keys.member(m.Room, m.ID)), "=", ref.joined)}
	if fromShared {
		cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(live), "=", ref.lease))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(live), "=", 0))
	}
	start := time.Now()
	resp, err := p.s.client.Txn(ctx).If(cmps...).Then(clientv3.OpPut(live, "", clientv3.WithLease(lease))).Commit()
	p.s.metrics.observe("attach", start)
	if err != nil || !resp.Succeeded {
		p.revoke(lease)
		return err == nil // nothing to attach any more
	}
	p.s.settle(ctx, resp.Header.Revision, start)
	p.s.metrics.leaseRenewals.Inc()
	return true
}

// keepAlive is one lease keep-alive stream and the goroutine that reads
// its answers. The stream goes to one member, through that member's pinned
// client (failover.go) when the store has them: a member that falls
// silent (a stopped process, a lost path) answers nothing and closes
// nothing, so a renewal left unanswered for the member timeout ends the
// stream, and the next renewal opens one on another member. Before, the
// stream stayed on the silent member until gRPC keepalive gave up (~15 s),
// and members with a client timeout shorter than that timed out (the fault
// suite's StopLeader).
type keepAlive struct {
	stream  pb.Lease_LeaseKeepAliveClient
	cancel  context.CancelFunc
	done    chan struct{} // closed when the stream has ended
	node    *node         // the member it goes to; nil without pinned clients
	timeout time.Duration // how long a renewal may wait for its answer
	opened  time.Time
	silent  atomic.Bool // ended by broken: a renewal went unanswered
	// waiting: when the oldest renewal not yet answered was sent (unix
	// nanoseconds), 0 when every one was answered.
	waiting atomic.Int64
}

// openKeepAlive opens a stream, on another member than avoid's when it
// can.
func (p *presence) openKeepAlive(avoid *node) (*keepAlive, error) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(p.s.ctx))
	client, n := p.s.client, (*node)(nil)
	if ns := p.s.nodes; ns != nil {
		n = ns.pick(avoid, false)
		client = n.client
	}
	stream, err := clientv3.RetryLeaseClient(client).LeaseKeepAlive(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	ka := &keepAlive{stream: stream, cancel: cancel, done: make(chan struct{}), node: n, timeout: p.s.opts.MemberTimeout, opened: time.Now()}
	p.s.wg.Add(1)
	go func() {
		defer p.s.wg.Done()
		defer close(ka.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			ka.waiting.Store(0)
			if resp.TTL > 0 {
				p.s.metrics.leaseRenewals.Inc()
				continue
			}
			p.s.metrics.leaseLapses.Inc() // the lease is gone: its member's removal follows
			if int64(resp.ID) == p.instance.Load() {
				p.instanceLapsed.Store(true)
			}
		}
	}()
	return ka, nil
}

func (ka *keepAlive) send(lease clientv3.LeaseID) bool {
	if lease == 0 {
		return false
	}
	if err := ka.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease)}); err != nil {
		ka.cancel()
		return false
	}
	ka.waiting.CompareAndSwap(0, time.Now().UnixNano())
	return true
}

// broken reports whether the stream ended, or its member left a renewal
// unanswered for longer than the member timeout: then the stream is ended.
func (ka *keepAlive) broken() bool {
	select {
	case <-ka.done:
		return true
	default:
	}
	if sent := ka.waiting.Load(); ka.timeout > 0 && sent != 0 && time.Since(time.Unix(0, sent)) > ka.timeout {
		ka.silent.Store(true)
		ka.cancel()
		return true
	}
	return false
}

func (ka *keepAlive) close() {
	if ka != nil {
		ka.cancel()
		<-ka.done
	}
}

// reapLoop removes members whose lease lapsed, until Close.
func (p *presence) reapLoop() {
	defer p.s.wg.Done()
	t := time.NewTicker(p.tick())
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.kick:
		case <-p.s.ctx.Done():
			return
		}
		p.reap()
	}
}

func (p *presence) reap() {
	silent := p.s.mirror.members(true)
	// Every instance reaps: in different orders, they rarely collide. A few
	// removals at a time, so that a mass lapse (a restart's shared lease)
	// is not one round trip after another.
	mrand.Shuffle(len(silent), func(i, j int) { silent[i], silent[j] = silent[j], silent[i] })
	const parallel = 8
	slots := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, m := range silent {
		if failed.Load() {
			break // etcd is unwell: the next tick tries again
		}
		if p.alive(m.Member) {
			continue // the renewer gives it a lease again
		}
		if time.Since(m.lapsed) < p.lapseGrace {
			continue // its holder, if any, gets there first (a later tick tries)
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			ctx, cancel := p.s.opContext(p.s.ctx)
			defer cancel()
			_, removed, err := p.s.leave(ctx, m.Member, removal{reason: store.ReasonTimeout, silent: true})
			switch {
			case err != nil:
				if failed.CompareAndSwap(false, true) && p.s.ctx.Err() == nil && !errors.Is(err, store.ErrClosed) {
					p.s.log.Warn("remove silent member", "room", m.Room, "client", m.ID, "err", err)
				}
			case removed:
				p.s.log.Info("member timed out", "room", m.Room, "client", m.ID)
			}
		})
	}
	wg.Wait()
}

// revokeLoop revokes the leases given back, until Close.
func (p *presence) revokeLoop() {
	defer p.s.wg.Done()
	for {
		select {
		case lease := <-p.revokes:
			ctx, cancel := context.WithTimeout(p.s.ctx, time.Second)
			p.s.client.Revoke(ctx, lease)
			cancel()
		case <-p.s.ctx.Done():
			return
		}
	}
}
