package boltstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tincan/tincan/store"
)

// The buckets: see doc.go.
var (
	bucketMeta    = []byte("meta")
	bucketTokens  = []byte("tokens") // retired: the directory finds tokens (directory.go)
	bucketRooms   = []byte("rooms")
	bucketMembers = []byte("members")
	bucketMsgs    = []byte("msgs")
	bucketIdem    = []byte("idem")
	keyInfo       = []byte("info")
)

// Options are the rules of every engine and the bbolt engine's own
// settings. Zero values take the defaults noted.
type Options struct {
	store.Options
	MaxBatch    int           // writes per group commit (default 1000)
	AckFlush    time.Duration // how often acknowledgements are written (default 500ms)
	RecentBytes int           // newest messages kept in memory for delivery (default 16 MiB; < 0: none)
	OrphanSweep time.Duration // how often deleted rooms' messages are deleted from the file (default 250ms)
	// Registerer takes the engine's metrics (commits, pruning, members,
	// file size); nil registers none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger // nil: no log
}

// Store is the bbolt engine of store.Store. Close it to stop its
// background work: the commit loop, the acknowledgement writer, the sweep
// of deleted rooms, pruning and the removal of silent members.
type Store struct {
	db   *bolt.DB
	opts Options

	ops        chan *op
	closing    chan struct{} // closed by Close
	done       chan struct{} // closed by the commit loop when it has ended
	once       sync.Once
	background sync.WaitGroup // the reaper and the pruner

	// Every member, with its latest acknowledgement: Read honours an
	// acknowledgement at once, before it reaches the disk.
	dir     *directory
	acksMu  sync.Mutex
	unsaved map[store.Member]uint64 // acknowledgements not yet on disk

	idem    *idemKeys
	orphans orphans
	pruned  atomic.Uint64 // messages deleted by pruning, since Open

	index *index
	// Owned by the commit loop, for the transaction being built: index
	// changes it staged, what to do once it has committed, and whom to
	// notify after that.
	staged staged
	hooks  []func()
	wakes  []wake
	// outboxAdded: the transaction being built wrote webhook events.
	outboxAdded bool
	watchers    store.Watchers

	// Members removed by Kick or CloseRoom, for their refusals (apps.go),
	// and the members listening now, for Room.
	tombs     tombstones
	listenMu  sync.Mutex
	listening map[store.Member]int

	notifier store.Notifier
	presence *store.Presence

	// Commit statistics, read by Stats.
	mu      sync.Mutex
	commits uint64
	written uint64
	onBatch func(ops int, d time.Duration)
}

var _ store.Store = (*Store)(nil)

type op struct {
	fn  func(tx *bolt.Tx) error
	err chan error
}

// Open opens (or creates) the bbolt file at path and starts the commit loop.
func Open(path string, opts Options) (*Store, error) {
	opts.Options = opts.Options.WithDefaults()
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 1000
	}
	if opts.RecentBytes == 0 {
		opts.RecentBytes = 16 << 20
	}
	if opts.OrphanSweep == 0 {
		opts.OrphanSweep = 250 * time.Millisecond
	}
	if opts.AckFlush == 0 {
		opts.AckFlush = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        2 * time.Second, // another process holds the file lock
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
		MmapFlags:      mmapFlags, // a cold start reads the file at once, not a fault per page
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: another process holds this file (is another tincan running on it?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketRooms, bucketMsgs, bucketIdem, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		// Files written before the directory have a tokens bucket.
		if tx.Bucket(bucketTokens) != nil {
			return tx.DeleteBucket(bucketTokens)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		opts:      opts,
		ops:       make(chan *op, opts.MaxBatch),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
		dir:       newDirectory(),
		unsaved:   map[store.Member]uint64{},
		idem:      newIdemKeys(),
		index:     newIndex(opts.RecentBytes),
		presence:  store.NewPresence(opts.Now),
		tombs:     newTombstones(),
		listening: map[store.Member]int{},
	}
	if err := s.loadIndex(); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	if err := s.startPresence(); err != nil {
		db.Close()
		return nil, fmt.Errorf("members %s: %w", path, err)
	}
	s.registerMetrics(opts.Registerer)
	go s.commitLoop()
	go s.ackLoop()
	go s.orphanLoop()
	s.background.Add(2)
	go s.reapLoop()
	go s.pruneLoop()
	return s, nil
}

// Close writes the acknowledgements, waits for queued writes, stops the
// commit loop and the background work, and closes the file.
func (s *Store) Close() error {
	s.flushAcks(context.Background())
	s.once.Do(func() { close(s.closing) })
	<-s.done
	s.background.Wait()
	return s.db.Close()
}

// Capacity is the number of members a room admits.
func (s *Store) Capacity() int { return s.opts.Capacity }

// Stats reports the number of commits and of writes they carried.
func (s *Store) Stats() (commits, writes uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits, s.written
}

// fileSize is the size of the bbolt file in bytes.
func (s *Store) fileSize() int64 {
	var n int64
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Ping implements store.Store: it commits an empty write, which proves the
// file is open and writable.
func (s *Store) Ping(ctx context.Context) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte("ping"), nil)
	})
}

// closed reports whether Close has begun: from then on every call answers
// store.ErrClosed.
func (s *Store) closed() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// update queues fn for the commit loop and waits until its transaction
// committed. fn must leave the transaction untouched when it returns an
// *store.Error (check first, write after), because it shares the transaction with
// other writers; any other error fails the batch, which is then retried one
// write per transaction. fn may therefore run more than once.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	o := &op{fn: fn, err: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-s.closing:
		return store.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the write happens: wait for it so that the caller never
	// reports failure for a committed change. Queued in the instant Close
	// stopped the loop (both cases of the select above were ready), it
	// does not: the loop is gone.
	select {
	case err := <-o.err:
		return err
	case <-s.done:
		select {
		case err := <-o.err:
			return err
		default:
			return store.ErrClosed
		}
	}
}

func (s *Store) commitLoop() {
	defer close(s.done)
	batch := make([]*op, 0, s.opts.MaxBatch)
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.closing:
			// Commit what was queued before Close, in batches as usual.
			select {
			case first = <-s.ops:
			default:
				return
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < s.opts.MaxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

func (s *Store) commit(batch []*op) {
	start := time.Now()
	s.staged.reset()
	s.hooks = s.hooks[:0]
	s.wakes = s.wakes[:0]
	s.outboxAdded = false
	errs := make([]error, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, o := range batch {
			errs[i] = o.fn(tx)
			var se *store.Error
			if errs[i] != nil && !errors.As(errs[i], &se) {
				return errs[i]
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		// One write broke the shared transaction: give each its own.
		for _, o := range batch {
			s.commit([]*op{o})
		}
		return
	}
	if err == nil {
		for _, h := range s.hooks {
			h()
		}
		// Only now, with the index and the directory up to date, can a
		// woken reader see the change.
		for _, w := range s.wakes {
			s.notifier.Notify(w.room, w.upto, w.ids...)
		}
		if s.outboxAdded {
			s.watchers.Notify()
		}
	}
	d := time.Since(start)
	s.mu.Lock()
	s.commits++
	s.written += uint64(len(batch))
	s.mu.Unlock()
	if s.onBatch != nil {
		s.onBatch(len(batch), d)
	}
	for i, o := range batch {
		if err != nil {
			o.err <- fmt.Errorf("commit: %w", err)
		} else {
			o.err <- errs[i]
		}
	}
}

// wake is a notification to send once the transaction has committed.
type wake struct {
	room string
	upto uint64
	ids  []string
}

// notifyAfterCommit tells the readers of ids in room, once the transaction
// being built has committed (and after every afterCommit function).
func (s *Store) notifyAfterCommit(room string, upto uint64, ids ...string) {
	if len(ids) > 0 {
		s.wakes = append(s.wakes, wake{room, upto, ids})
	}
}

// afterCommit runs f once the transaction being built has committed. Only
// for writes, which run in the commit loop.
func (s *Store) afterCommit(f func()) { s.hooks = append(s.hooks, f) }

// membersChanged records that the transaction being built changed room's
// members, and runs update (the directory's change) once it has committed:
// until then a post of this transaction reads the room's members from the
// disk, not from the directory (Append).
func (s *Store) membersChanged(room string, update func()) {
	s.staged.members[room] = true
	s.afterCommit(update)
}

// loadIndex rebuilds the index, the directory and the idempotency keys
// from the disk.
func (s *Store) loadIndex() error {
	return s.db.View(func(tx *bolt.Tx) error {
		if err := s.dir.load(tx); err != nil {
			return err
		}
		firsts, err := roomFirsts(tx)
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketMsgs).ForEach(func(k, v []byte) error {
			r, ok := viewRecord(v)
			if !ok {
				return fmt.Errorf("message %x: %w", k, errBadRecord)
			}
			id, room := binary.BigEndian.Uint64(k), string(r.room)
			if orphaned(firsts, room, id) {
				s.orphans.add([]uint64{id}, nil)
				return nil
			}
			s.index.addAt(room, id, r.pending, nil, r.created)
			if r.key != nil {
				s.idem.set(room, string(r.key), keyedPost{first: id, n: r.keyN})
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketIdem).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil
			}
			id := binary.BigEndian.Uint64(k)
			if _, room, key, n, ok := idemEntry(v); !ok || orphaned(firsts, room, id) {
				s.orphans.add(nil, []uint64{id})
			} else {
				s.idem.set(room, key, keyedPost{first: id, n: n})
			}
			return nil
		})
	})
}

// Secret implements store.Store.
func (s *Store) Secret(ctx context.Context, name string, n int) ([]byte, error) {
	if s.closed() {
		return nil, store.ErrClosed
	}
	key := []byte("secret/" + name)
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		out = clone(tx.Bucket(bucketMeta).Get(key))
		return nil
	})
	if err != nil || out != nil {
		return out, err
	}
	fresh := make([]byte, n)
	rand.Read(fresh)
	err = s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if v := b.Get(key); v != nil {
			out = clone(v)
			return nil
		}
		out = fresh
		return b.Put(key, fresh)
	})
	return out, err
}

// hashToken is the form in which a token is stored and looked up.
func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func newSecret(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}
