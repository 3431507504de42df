package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// The webhook outbox (store.Apps): with Options.Webhooks, each change
// that an application is told of writes its event to the outbox bucket in
// the transaction that makes the change, so that there is no event
// without its change and no change without its event, across crashes. An
// event is
//
//	key    big-endian seq, from the sequence of message ids (unique, never reused)
//	value  unix nanos (8 bytes), uvarint length + room, uvarint length + type, body
//
// The deliverer reads the outbox (Outbox) and deletes what it delivered
// (Delivered). Events are not mirrored in memory: the deliverer reads them
// a page at a time, far less often than posts and reads come.

var bucketOutbox = []byte("outbox")

// putEvent writes the event d to the outbox in tx, when webhooks are on,
// with the next seq.
func (s *Store) putEvent(tx *bolt.Tx, d store.EventData) error {
	if !s.opts.Webhooks {
		return nil
	}
	seq, err := tx.Bucket(bucketMeta).NextSequence()
	if err != nil {
		return err
	}
	d.Seq = seq
	body := store.EncodeEvent(d)
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+2+len(d.Room)+len(d.Type)+len(body)), uint64(d.Time.UnixNano()))
	v = binary.AppendUvarint(v, uint64(len(d.Room)))
	v = append(v, d.Room...)
	v = binary.AppendUvarint(v, uint64(len(d.Type)))
	v = append(v, d.Type...)
	v = append(v, body...)
	b := tx.Bucket(bucketOutbox)
	b.FillPercent = 1 // keys only ever grow
	if err := b.Put(u64(seq), v); err != nil {
		return err
	}
	s.outboxAdded = true
	return nil
}

// decodeEvent reads a stored event, copied out of the transaction.
func decodeEvent(k, v []byte) (store.Event, bool) {
	if len(k) != 8 || len(v) < 8 {
		return store.Event{}, false
	}
	ev := store.Event{Seq: binary.BigEndian.Uint64(k), Time: time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()}
	b := v[8:]
	field := func() (string, bool) {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return "", false
		}
		f := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return f, true
	}
	var ok1, ok2 bool
	ev.Room, ok1 = field()
	ev.Type, ok2 = field()
	ev.Body = clone(b)
	return ev, ok1 && ok2
}

// Outbox implements store.Apps: the oldest events first, in all rooms.
func (s *Store) Outbox(_ context.Context, limit int) ([]store.Event, error) {
	if s.closed() {
		return nil, store.ErrClosed
	}
	var out []store.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			ev, ok := decodeEvent(k, v)
			if !ok {
				return fmt.Errorf("outbox event %x: corrupt", k)
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

// Delivered implements store.Apps.
func (s *Store) Delivered(ctx context.Context, events []store.Event) error {
	if s.closed() {
		return store.ErrClosed
	}
	if len(events) == 0 {
		return nil
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for _, ev := range events {
			if err := b.Delete(u64(ev.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delivered: %w", err)
	}
	return nil
}

// OutboxChanged implements store.Apps. The commit loop calls f after a
// commit that wrote events, once the commit is on disk; f is not called
// after cancel returns.
func (s *Store) OutboxChanged(f func()) (cancel func()) { return s.watchers.Add(f) }

// ClaimOutbox implements store.Apps. One node holds the claim at once;
// it is lost (lost is closed) when the store closes.
func (s *Store) ClaimOutbox(ctx context.Context) (lost <-chan struct{}, release func(), err error) {
	if s.closed() {
		return nil, nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return s.closing, func() {}, nil
}
