package boltstore

import "slices"

// deliveryCache keeps the encoded records of the newest messages, up to
// limit bytes, so that live delivery reads them from memory instead of a
// read transaction (BENCHMARKS.md: a 10-message tail takes 0.5 µs from
// memory, 3.2 µs from disk). The oldest record added leaves first. A record
// is never changed in place: one that changes on disk is replaced (replace),
// one deleted is forgotten (forget).
//
// It has no lock of its own: the index, which changes with it, guards it.
type deliveryCache struct {
	records map[uint64][]byte // id -> encoded record
	order   []uint64          // ids as added, oldest first from head (some gone since)
	head    int
	bytes   int
	limit   int // <= 0: keeps nothing
}

func newDeliveryCache(limit int) deliveryCache {
	return deliveryCache{records: map[uint64][]byte{}, limit: limit}
}

func (c *deliveryCache) get(id uint64) ([]byte, bool) {
	rec, ok := c.records[id]
	return rec, ok
}

// put caches rec, dropping the oldest records over the limit.
func (c *deliveryCache) put(id uint64, rec []byte) {
	if len(rec) > c.limit {
		return
	}
	c.records[id] = rec
	c.order = append(c.order, id)
	c.bytes += len(rec)
	for c.bytes > c.limit {
		c.forget(c.order[c.head])
		c.head++
	}
	// Compact the order when half of it is dropped or forgotten ids, so
	// that it stays within twice the cache.
	if live := len(c.order) - c.head; c.head > live || live > 2*len(c.records)+64 {
		c.order = slices.DeleteFunc(c.order[c.head:], func(id uint64) bool {
			_, ok := c.records[id]
			return !ok
		})
		c.head = 0
	}
}

// replace puts rec in place of id's record, if that is cached.
func (c *deliveryCache) replace(id uint64, rec []byte) {
	if old, ok := c.records[id]; ok {
		c.bytes += len(rec) - len(old)
		c.records[id] = rec
	}
}

// forget drops id's record.
func (c *deliveryCache) forget(id uint64) {
	if rec, ok := c.records[id]; ok {
		c.bytes -= len(rec)
		delete(c.records, id)
	}
}
