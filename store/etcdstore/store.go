// Package etcdstore is the cluster engine of store.Store: tincan's state in
// an etcd cluster (v3 API), shared by any number of tincan instances, each
// with its own Store on the same etcd and prefix. A write is acknowledged
// only once etcd has committed it, which means a quorum of its members
// fsync'd it: nothing acknowledged is lost when an instance dies, nor when
// a minority of etcd's members does. The engine writes nothing outside its
// prefix (Options.Prefix); keys.go lists the layout.
//
// Its promises are store.Store's; storetest proves them, on an in-process
// three-member etcd. What the cluster adds:
//
// Ids come from etcd revisions (id = revision*64 + index in the
// transaction; see keys.go): strictly increasing in a room and never
// reused, across restarts of instances and of etcd, but not consecutive.
//
// The mirror: each instance keeps the whole state under the prefix in
// memory (mirror.go), loaded at Open and kept current by one watch of the
// prefix (watch.go). One prefix watch rather than a watch per room,
// because a round-robin balancer sends each member's requests to every
// instance, so every instance soon needs every active room anyway (tokens
// to authenticate, recipients for posts, entries for readers): per-room
// watches would deliver each change to as many instances, and add, for
// each room on each instance, a range read and a watch to start before
// the room's first request there can be answered, and a watch to end.
// Measured roughly on a 2-core machine: applying one message event to the
// mirror takes about 2 µs (following 6,000 messages a second costs an
// instance about 1% of a core), while starting one room's watch with its
// range read takes about 0.75 ms. The price is memory: the retained state
// on every instance, as bbolt's engine keeps its directory and index.
//
// Reads, Authenticate and Occupants are answered from the mirror with no
// round trip. Each write goes to etcd as one transaction that compares
// what it read from the mirror (the room record's mod revision, which
// every join and leave changes; the idempotency key; the room's place): if
// the mirror was behind, the comparison fails, the mirror catches up and
// the write is tried again (conflicts are retried inside the engine, never
// returned). A write returns once its own change has reached the mirror
// too, so a caller reads its own writes on the instance it wrote on; on
// other instances a change shows within the watch's latency
// (milliseconds). A refusal read from the mirror (unknown token, member or
// peer, full room, wrong password, too many rooms or messages) is only
// given after the mirror caught up with the cluster, so that a member that
// joined a moment ago on another instance is not refused here.
//
// Prompt logout: a member that left, on any instance, stops authenticating
// on every instance as soon as its leave reaches that instance's mirror:
// within the watch's latency (milliseconds) while the instance follows
// etcd; an instance that has not been able to confirm its mirror current
// for StaleAfter (default 5 s) brings it up to date before answering
// Authenticate, Read or Ping, or answers store.ErrUnavailable. So no
// instance authenticates a departed member for longer than StaleAfter.
//
// Silent members (failover.go, progress.go): a member that stops
// answering without closing its connections (a stopped process, a paused
// machine, a network that drops packets) is left within about
// MemberTimeout (default 1 s) and a half. Open keeps a client pinned to
// each member besides the shared one; writes go to the leader, reads
// round the members, and a call without an answer after MemberTimeout
// makes the engine ask its member: a member that does not answer gets no
// calls until it does again, and a call it held is ended and sent
// elsewhere when that is safe (reads, and transactions that compare what
// they write, such as posts with an idempotency key). The watch is
// checked every MemberTimeout/2 against a quorum read of the cluster's
// revision, and opened again on another member when it does not move for
// MemberTimeout.
//
// Presence is decided once for the whole cluster: each member has a lease
// of the client timeout (rounded up to whole seconds, and at least etcd's
// minimum lease TTL) holding its live key (presence.go). Whichever instance
// sees the member (Touch, Hold) renews the lease; when it lapses, etcd
// deletes the live key, every instance sees that in its watch, and each
// tries to remove the member with a transaction that requires the live key
// to be gone and the member to be there: exactly one succeeds, so exactly
// one peer-left event of reason timeout is written. An instance that finds
// no other instance running when it opens (instance keys, on short leases,
// revoked by Close) gives every member one fresh shared lease of the whole
// client timeout: after a restart of every instance, everybody gets the
// whole timeout again; a member then seen by an instance moves to a lease
// of its own.
//
// Acknowledgements are held in memory and written every AckFlush (default
// 500 ms), one transaction for all of them; a crash loses at most that
// interval, as with bbolt. An acknowledgement holds at once on the
// instance that received it and within AckFlush plus the watch's latency
// on the others (clients send their cursor anyway).
//
// Capacity, passwords, resume (by token or identity), idempotency keys,
// MaxRoomMessages (messages.go: limit), room deletion with the last
// leave, Kick, CloseRoom and MaxRooms are exact: each is decided inside a
// transaction. Posts that arrive while one is in flight go to etcd
// together in the next, each its own nested transaction (groupcommit.go).
//
// Retention: pruning (every PruneEvery, on every instance; deleting what
// another instance deleted already costs nothing) deletes acknowledged and
// expired entries and expired idempotency keys; the last leave deletes the
// room's keys in one range delete. etcd keeps every revision until it is
// compacted, and the engine needs none of the history: only a watch that
// reconnects reads a little of it, and one that finds it compacted
// reloads the mirror and goes on. So compact often: run etcd with
// --auto-compaction-mode=periodic --auto-compaction-retention=1m (etcd
// then compacts every minute, keeping the last minute). Between two
// compactions the history grows by about two revisions per message (its
// put and its prune) of a few hundred bytes each: size
// --quota-backend-bytes for the busiest two minutes (2 minutes of 10,000
// messages a second is under 1 GiB, half the default quota), and
// defragment in quiet hours to give the file's free pages back.
//
// Applications (store.Apps; apps.go has the details). Profiles are kept in
// the member records; a join whose identity is a member's resumes it in a
// transaction that compares the room record, like any join, so that one
// identity is never two members of a room, and deletes the old token's
// key, so the old token stops authenticating on every instance as a leave
// does. With Options.Webhooks every change writes its webhook events in
// its own transaction, under P outbox/ (seq = revision*64 + index, like
// entry ids); every instance mirrors the outbox and its OutboxChanged
// fires when its watch brings new events, whoever wrote them. One
// instance delivers at a time: the holder of P outbox-claim, a key on a
// lease of claimTTL (3 s) that it keeps alive; the others watch the key
// and take over within about that long after the holder dies. Kick and
// CloseRoom turn the members' token keys into tombstones on a lease of
// the client timeout, mirrored everywhere: Authenticate and Read answer
// store.ErrKicked or store.ErrRoomClosed on every instance while it
// lasts. Room's Listening is the cluster's knowledge: held on some
// instance now or within the client timeout (listen keys written once per
// stretch of listening, on the writer's instance lease). LastActive is the
// latest of the room record's last join or leave and the newest entry the
// mirror has seen (an instance loaded after its entries were pruned may
// show an earlier time).
//
// Every instance on one prefix must run with the same rules (Capacity,
// MaxRooms, MessageTTL, ClientTimeout...): each enforces its own.
// Options.Now dates entries and idempotency keys, for the message TTL;
// presence runs on etcd's lease clock, in real time.
//
// Errors: see errors.go. store.ErrUnavailable (code "unavailable") means
// etcd did not answer within RequestTimeout (no quorum, no leader, no
// connection); the handlers answer it with 503.
package etcdstore

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tincan/tincan/store"
)

// Options are the rules of every engine and the etcd engine's own
// settings. Zero values take the defaults noted.
type Options struct {
	store.Options
	Endpoints []string    // etcd client URLs, for Open
	TLS       *tls.Config // for Open; nil: plain connections
	// Prefix is where the engine keeps its keys (default "/tincan/"); a
	// missing final "/" is added. Deployments sharing one etcd use
	// different prefixes.
	Prefix string
	// RequestTimeout bounds each etcd operation, retries included
	// (default 5s); past it the call fails with store.ErrUnavailable.
	RequestTimeout time.Duration
	// StaleAfter is how long the mirror may go unconfirmed before
	// Authenticate, Read and Ping first bring it up to date (default 5s).
	StaleAfter time.Duration
	// MemberTimeout is how long one etcd member may leave a request or
	// the watch without an answer before the engine turns to another
	// member (default 1s; failover.go, progress.go). Open only: a client
	// given to OpenClient keeps its own behaviour, but for the watch.
	MemberTimeout time.Duration
	AckFlush      time.Duration // how often acknowledgements are written (default 500ms)
	// Registerer takes the engine's metrics (etcd round trips, watch lag,
	// lease renewals, members, rooms, pruning); nil registers none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger // nil: no log
}

// Store is the etcd engine of store.Store. Close it to stop its background
// work: the watch, the heartbeat, acknowledgements, lease renewals, the
// removal of silent members and pruning.
type Store struct {
	opts      Options
	client    *clientv3.Client
	ownClient bool
	nodes     *nodes // the clients pinned to each member; nil with OpenClient
	keys      layout
	log       *slog.Logger
	self      string // this instance's random id

	ctx       context.Context // ended by Close
	cancel    context.CancelFunc
	watchCtx  context.Context // what the watch's streams derive from
	stream    atomic.Pointer[watchStream]
	streams   atomic.Uint64 // streams opened, for their names
	wg        sync.WaitGroup
	closed    atomic.Bool
	closeOnce sync.Once

	mirror   *mirror
	notifier store.Notifier
	freshAt  atomic.Int64  // unix nanos: the mirror holds every change committed before
	names    atomic.Uint64 // entries named by this instance

	acks     acks
	group    *groupCommit // sends posts to etcd together (groupcommit.go)
	presence *presence
	metrics  *metrics
	pruned   atomic.Uint64 // entries deleted by this instance's pruning

	outboxWatchers store.Watchers // OutboxChanged's subscribers
	claims         claims         // the outbox claims held here (apps.go)
}

var _ store.Store = (*Store)(nil)

// Open connects to the etcd cluster at opts.Endpoints and opens the engine
// on opts.Prefix. It fails when etcd does not answer within
// opts.RequestTimeout; when that is because the TLS handshake with an
// endpoint fails, the error says so, naming the endpoint and the reason.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcdstore: no etcd endpoints")
	}
	cfg := clientv3.Config{
		Endpoints:            opts.Endpoints,
		TLS:                  opts.TLS,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connect to %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	if opts.MemberTimeout == 0 {
		opts.MemberTimeout = defaultMemberTimeout
	}
	ns, err := newNodes(cfg, opts.Endpoints, opts.MemberTimeout)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("etcdstore: connect to %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	s, err := open(ctx, c, ns, opts)
	if err != nil {
		c.Close()
		ns.close()
		if unavailable(err) {
			err = explainTLS(opts.Endpoints, opts.TLS, err)
		}
		return nil, err
	}
	return s, nil
}

// OpenClient opens the engine on a client the caller made (and closes,
// after Close). opts.Endpoints and opts.TLS are not used.
func OpenClient(ctx context.Context, c *clientv3.Client, opts Options) (*Store, error) {
	return open(ctx, c, nil, opts)
}

// open opens the engine on c; with ns (from Open), c is the engine's own,
// and its calls go through ns.
func open(ctx context.Context, c *clientv3.Client, ns *nodes, opts Options) (*Store, error) {
	opts.Options = opts.Options.WithDefaults()
	if opts.Prefix == "" {
		opts.Prefix = "/tincan/"
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.StaleAfter == 0 {
		opts.StaleAfter = 5 * time.Second
	}
	if opts.MemberTimeout == 0 {
		opts.MemberTimeout = defaultMemberTimeout
	}
	if opts.AckFlush == 0 {
		opts.AckFlush = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	self := make([]byte, 8)
	rand.Read(self)
	s := &Store{
		opts:      opts,
		client:    c,
		ownClient: ns != nil,
		nodes:     ns,
		keys:      layout{prefix: opts.Prefix},
		log:       opts.Logger,
		self:      hex.EncodeToString(self),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.watchCtx = clientv3.WithRequireLeader(s.ctx)
	if ns != nil {
		ns.install(s, c)
	}
	s.mirror = newMirror(s.keys)
	s.acks.unsaved = map[store.Member]uint64{}
	s.metrics = newMetrics(s, opts.Registerer)
	s.presence = newPresence(s)
	s.group = newGroupCommit(s)

	fail := func(what string, err error) (*Store, error) {
		s.cancel()
		s.wg.Wait()
		return nil, fmt.Errorf("etcdstore: %s (prefix %s): %w", what, opts.Prefix, err)
	}
	if err := s.reload(ctx); err != nil {
		return fail("load", err)
	}
	// Start following at once: what the start below writes must reach the
	// mirror.
	s.wg.Add(2)
	go s.watchLoop()
	go s.guardLoop()
	if err := s.presence.start(ctx); err != nil {
		return fail("presence", err)
	}
	s.wg.Add(3)
	go s.ackLoop()
	go s.pruneLoop()
	go s.group.run()
	s.metrics.register(opts.Registerer)
	return s, nil
}

// Close writes the pending acknowledgements, stops the background work
// and, when Open made the client, closes it. Calls after Close answer
// store.ErrClosed.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
		defer cancel()
		err = s.flushAcks(ctx)
		s.closed.Store(true)
		s.releaseClaims()    // another instance delivers the outbox at once
		s.presence.stop(ctx) // this instance no longer counts as running
		s.cancel()
		s.wg.Wait()
		if s.nodes != nil {
			s.nodes.close()
		}
		if s.ownClient {
			if cerr := s.client.Close(); cerr != nil && err == nil && !errors.Is(cerr, context.Canceled) {
				err = cerr
			}
		}
	})
	return err
}

// Capacity implements store.Store.
func (s *Store) Capacity() int { return s.opts.Capacity }

// Ping implements store.Store: it writes the ping key, which proves that
// etcd has a quorum that commits, and makes sure the mirror is current.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	start := time.Now()
	_, err := s.client.Put(octx, s.keys.ping(), s.self)
	s.metrics.observe("ping", start)
	if err != nil {
		return s.failure(ctx, "ping", err)
	}
	return s.ensureFresh(ctx)
}

// Secret implements store.Store. The first writer wins: a transaction
// creates the key only if it does not exist, and otherwise returns it.
func (s *Store) Secret(ctx context.Context, name string, n int) ([]byte, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	fresh := make([]byte, n)
	rand.Read(fresh)
	key := s.keys.secret(name)
	octx, cancel := s.opContext(ctx)
	defer cancel()
	for attempt := 0; ; attempt++ {
		start := time.Now()
		resp, err := s.client.Txn(octx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(fresh))).
			Else(clientv3.OpGet(key)).
			Commit()
		s.metrics.observe("secret", start)
		if err != nil {
			if s.again(octx, attempt, true, err) {
				continue
			}
			return nil, s.failure(ctx, "secret", err)
		}
		if resp.Succeeded {
			return fresh, nil
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			return kvs[0].Value, nil
		}
		// Deleted between the comparison and the read: impossible in one
		// transaction, but try again rather than return nothing.
	}
}

// newName names a new entry's key: unique across instances and restarts.
func (s *Store) newName() string {
	return fmt.Sprintf("%s-%x", s.self, s.names.Add(1))
}
