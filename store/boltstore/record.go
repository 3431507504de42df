package boltstore

import (
	"encoding/binary"
	"errors"
	"strconv"
	"time"
)

// A message record is stored as
//
//	created  8 bytes, unix nanoseconds, big-endian
//	flags    1 byte (flagPending: kept for the next member who joins)
//	room     1 byte length + room name
//	n        1 byte, number of recipients
//	n times  1 byte length + client id
//	key      only with flagKeyed: 1 byte length + the post's idempotency
//	         key (client id \x00 key), then the number of the post's
//	         messages as a uvarint
//	data     the JSON object exactly as it is delivered, id and from included
//
// so that a delivery is a slice of the stored bytes, never a re-encoding.
// The first message of a post with an Idempotency-Key carries the key
// (idem.go says why and how it outlives the message).
type record struct {
	room       string
	created    time.Time
	pending    bool
	recipients []string
	key        string // client id \x00 idempotency key, or ""
	keyN       int    // with key: the number of the post's messages
	data       []byte
}

const (
	flagPending = 1
	flagKeyed   = 2
)

// maxRecordKey is the longest key a record carries; a longer one (a long
// client id) goes to the idem bucket as before.
const maxRecordKey = 255

var errBadRecord = errors.New("corrupt message record")

// appendQuoted appends s quoted as strconv.AppendQuote does, copying it
// as it is when it needs no escape, as every client id the server makes
// (base64url) does not: per message, strconv's rune-by-rune quoting was
// ~1 % of the server's instructions (BENCHMARKS §12.8).
func appendQuoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, s)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

func (r record) encode() []byte {
	return append(r.header(len(r.data)), r.data...)
}

// header encodes the record up to its data, in a slice with room for
// dataLen more bytes: appendRecord appends the data in place, so that a
// message's bytes are made once (issue 20: fewer allocations per message).
func (r record) header(dataLen int) []byte {
	n := 11 + len(r.room) + dataLen
	for _, id := range r.recipients {
		n += 1 + len(id)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint64(b, uint64(r.created.UnixNano()))
	var flags byte
	if r.pending {
		flags |= flagPending
	}
	if r.key != "" {
		flags |= flagKeyed
		n += 1 + len(r.key) + binary.MaxVarintLen64
	}
	b = append(b, flags, byte(len(r.room)))
	b = append(b, r.room...)
	b = append(b, byte(len(r.recipients)))
	for _, id := range r.recipients {
		b = append(b, byte(len(id)))
		b = append(b, id...)
	}
	if r.key != "" {
		b = append(append(b, byte(len(r.key))), r.key...)
		b = binary.AppendUvarint(b, uint64(r.keyN))
	}
	return b
}

// recordView is an encoded record read in place, without allocating: its
// slices alias the stored bytes, which are only valid inside the
// transaction that read them (or, for the delivery cache, for good).
type recordView struct {
	created    int64 // unix nanoseconds
	pending    bool
	room       []byte
	recipients []byte // n times: 1 byte length + client id
	key        []byte // client id \x00 idempotency key, or nil
	keyN       int
	data       []byte
}

func viewRecord(b []byte) (recordView, bool) {
	if len(b) < 11 || len(b) < 11+int(b[9]) {
		return recordView{}, false
	}
	flags := b[8]
	v := recordView{
		created: int64(binary.BigEndian.Uint64(b)),
		pending: flags&flagPending != 0,
		room:    b[10 : 10+b[9]],
	}
	b = b[10+b[9]:]
	n := int(b[0])
	start := b[1:]
	b = start
	for range n {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return recordView{}, false
		}
		b = b[1+b[0]:]
	}
	v.recipients = start[:len(start)-len(b)]
	if flags&flagKeyed != 0 {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return recordView{}, false
		}
		v.key, b = b[1:1+b[0]], b[1+b[0]:]
		keyN, k := binary.Uvarint(b)
		if k <= 0 || keyN < 1 || keyN > 1<<16 {
			return recordView{}, false
		}
		v.keyN, b = int(keyN), b[k:]
	}
	v.data = b
	return v, true
}

// eachRecipient calls f with each recipient's client id, aliasing the record,
// until f returns false.
func (v recordView) eachRecipient(f func(id []byte) bool) {
	for b := v.recipients; len(b) > 0; b = b[1+b[0]:] {
		if !f(b[1 : 1+b[0]]) {
			return
		}
	}
}

// addressedTo reports whether the record is for client id.
func (v recordView) addressedTo(id string) bool {
	found := false
	v.eachRecipient(func(r []byte) bool {
		found = string(r) == id
		return !found
	})
	return found
}

// decodeRecord reads a record into a record, for re-encoding it; its data
// aliases b.
func decodeRecord(b []byte) (record, error) {
	v, ok := viewRecord(b)
	if !ok {
		return record{}, errBadRecord
	}
	r := record{room: string(v.room), created: time.Unix(0, v.created), pending: v.pending, key: string(v.key), keyN: v.keyN, data: v.data}
	v.eachRecipient(func(id []byte) bool {
		r.recipients = append(r.recipients, string(id))
		return true
	})
	return r, nil
}
