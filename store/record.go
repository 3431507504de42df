package store

import (
	"encoding/binary"
	"errors"
	"time"
)

// A message record is stored as
//
//	created  8 bytes, unix nanoseconds, big-endian
//	flags    1 byte (flagPending: kept for the next member who joins)
//	room     1 byte length + room name
//	n        1 byte, number of recipients
//	n times  1 byte length + client id
//	data     the JSON object exactly as it is delivered, id and from included
//
// so that a delivery is a slice of the stored bytes, never a re-encoding.
type record struct {
	room       string
	created    time.Time
	pending    bool
	recipients []string
	data       []byte
}

const flagPending = 1

var errBadRecord = errors.New("corrupt message record")

func (r record) encode() []byte {
	n := 11 + len(r.room) + len(r.data)
	for _, id := range r.recipients {
		n += 1 + len(id)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint64(b, uint64(r.created.UnixNano()))
	var flags byte
	if r.pending {
		flags |= flagPending
	}
	b = append(b, flags, byte(len(r.room)))
	b = append(b, r.room...)
	b = append(b, byte(len(r.recipients)))
	for _, id := range r.recipients {
		b = append(b, byte(len(id)))
		b = append(b, id...)
	}
	return append(b, r.data...)
}

// decodeRecord reads a record without copying: its slices alias b, which is
// only valid inside the transaction that read it.
func decodeRecord(b []byte) (record, error) {
	if len(b) < 11 || len(b) < 11+int(b[9]) {
		return record{}, errBadRecord
	}
	r := record{
		created: time.Unix(0, int64(binary.BigEndian.Uint64(b))),
		pending: b[8]&flagPending != 0,
		room:    string(b[10 : 10+b[9]]),
	}
	b = b[10+b[9]:]
	n := int(b[0])
	b = b[1:]
	for range n {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return record{}, errBadRecord
		}
		r.recipients = append(r.recipients, string(b[1:1+b[0]]))
		b = b[1+b[0]:]
	}
	r.data = b
	return r, nil
}

// addressedTo reports whether the record is for client id.
func (r record) addressedTo(id string) bool {
	for _, x := range r.recipients {
		if x == id {
			return true
		}
	}
	return false
}

// peekRecord reads what a delivery needs from an encoded record, in place
// and without allocating: when it was created, whether it is for client,
// and the data (aliasing b).
func peekRecord(b []byte, client string) (created int64, forClient bool, data []byte, ok bool) {
	if len(b) < 11 || len(b) < 11+int(b[9]) {
		return 0, false, nil, false
	}
	created = int64(binary.BigEndian.Uint64(b))
	b = b[10+b[9]:]
	n := int(b[0])
	b = b[1:]
	for range n {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return 0, false, nil, false
		}
		if string(b[1:1+b[0]]) == client {
			forClient = true
		}
		b = b[1+b[0]:]
	}
	return created, forClient, b, true
}
