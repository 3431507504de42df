package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Event is one event of a text/event-stream (the WHATWG "server-sent
// events" format), or one comment.
//
// Its byte slices belong to the EventReader and stay valid only until the
// next call of Next; copy what you keep.
type Event struct {
	// ID is the event's own "id:" field, empty when it had none. (The
	// format's "last event ID", which a reconnect sends, is the last
	// non-empty one: keep it yourself.)
	ID []byte
	// Name is the "event:" field; empty for a default ("message") event.
	Name []byte
	// Data is the "data:" lines joined by "\n".
	Data []byte
	// HasData says that the event had a "data:" field (Data may be empty).
	HasData bool
	// Retry is the "retry:" field as sent, empty when absent.
	Retry []byte
	// Comment says that the event held a comment line (": keepalive"). An
	// event of comments only has no Data, Name or Retry.
	Comment bool
}

// maxLine bounds one line of an event stream; a longer one is an error
// (tincan's own lines are at most a message of -max-body plus a little).
const maxLine = 4 << 20

// EventReader parses a text/event-stream as it arrives. It serves the
// client's own Receive and anyone who wants the frames themselves (the
// tests of the server's wire format).
type EventReader struct {
	br   *bufio.Reader
	long []byte // a line longer than the buffer
	ev   Event
}

// NewEventReader reads events from r through a 32 KiB buffer.
func NewEventReader(r io.Reader) *EventReader {
	return &EventReader{br: bufio.NewReaderSize(r, 32<<10)}
}

// Next returns the next event that carries something: data, an id, an
// event name, a retry field or a comment. Lines end with "\n", "\r\n"; a field's value
// loses one leading space. At the end of the stream Next returns io.EOF
// when it ended between events and io.ErrUnexpectedEOF inside one.
func (r *EventReader) Next() (*Event, error) {
	e := &r.ev
	e.ID, e.Name, e.Data, e.Retry = e.ID[:0], e.Name[:0], e.Data[:0], e.Retry[:0]
	e.HasData, e.Comment = false, false
	started := false
	for {
		l, err := r.line()
		if err != nil {
			if err == io.EOF && started {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(l) == 0 {
			if e.HasData || e.Comment || len(e.Name) > 0 || len(e.Retry) > 0 || len(e.ID) > 0 {
				return e, nil
			}
			started = false
			continue
		}
		started = true
		if l[0] == ':' {
			e.Comment = true
			continue
		}
		name, value, _ := bytes.Cut(l, []byte{':'})
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(name) {
		case "data":
			if e.HasData {
				e.Data = append(e.Data, '\n')
			}
			e.Data = append(e.Data, value...)
			e.HasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 { // the format ignores an id with NUL
				e.ID = append(e.ID[:0], value...)
			}
		case "event":
			e.Name = append(e.Name[:0], value...)
		case "retry":
			e.Retry = append(e.Retry[:0], value...)
		}
	}
}

// line reads one line without its end.
func (r *EventReader) line() ([]byte, error) {
	l, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], l...)
		for err == bufio.ErrBufferFull {
			if len(r.long) > maxLine {
				return nil, errors.New("tincan: event stream line longer than 4 MiB")
			}
			l, err = r.br.ReadSlice('\n')
			r.long = append(r.long, l...)
		}
		l = r.long
	}
	if err != nil {
		if err == io.EOF && len(l) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}
