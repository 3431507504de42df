package client_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tincan/tincan/client"
)

// event is an Event with strings, to compare.
type event struct {
	ID, Name, Data, Retry string
	HasData, Comment      bool
}

func readAll(r io.Reader) ([]event, error) {
	er := client.NewEventReader(r)
	var out []event
	for {
		e, err := er.Next()
		if err != nil {
			return out, err
		}
		out = append(out, event{string(e.ID), string(e.Name), string(e.Data), string(e.Retry), e.HasData, e.Comment})
	}
}

func TestEventReader(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	for _, tc := range []struct {
		name, in string
		want     []event
		err      error
	}{
		{"tincan's stream", "id: 16\ndata: {\"next\":16}\nevent: ready\nretry: 2000\n\nid: 17\ndata: {\"id\":17}\n\n: keepalive\n\n",
			[]event{{ID: "16", Name: "ready", Data: `{"next":16}`, Retry: "2000", HasData: true}, {ID: "17", Data: `{"id":17}`, HasData: true}, {Comment: true}}, io.EOF},
		{"CRLF and CR-less ends, no space after the colon", "id:1\r\ndata:a\r\n\r\n", []event{{ID: "1", Data: "a", HasData: true}}, io.EOF},
		{"data lines joined by newlines", "data: a\ndata:\ndata: b\n\n", []event{{Data: "a\n\nb", HasData: true}}, io.EOF},
		{"a frame without id has none", "id: 5\ndata: a\n\ndata: b\n\n", []event{{ID: "5", Data: "a", HasData: true}, {Data: "b", HasData: true}}, io.EOF},
		{"blank lines between frames", "\n\n\ndata: a\n\n\n", []event{{Data: "a", HasData: true}}, io.EOF},
		{"unknown fields ignored", "foo: bar\ndata: a\n\n", []event{{Data: "a", HasData: true}}, io.EOF},
		{"an id with NUL is ignored", "id: 1\x002\ndata: a\n\n", []event{{Data: "a", HasData: true}}, io.EOF},
		{"a line longer than the buffer", "data: " + long + "\n\n", []event{{Data: long, HasData: true}}, io.EOF},
		{"cut inside a frame", "data: a\n\ndata: b\n", []event{{Data: "a", HasData: true}}, io.ErrUnexpectedEOF},
		{"cut inside a line", "data: a\n\ndata: b", []event{{Data: "a", HasData: true}}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				got, err := readAll(r)
				if !errors.Is(err, tc.err) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("got %+v, %v; want %+v, %v", got, err, tc.want, tc.err)
				}
			}
		})
	}
}

// A line over 4 MiB is an error, not a buffer that grows without end.
func TestEventReaderLineLimit(t *testing.T) {
	_, err := readAll(io.MultiReader(strings.NewReader("data: "), strings.NewReader(strings.Repeat("x", 5<<20))))
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("a 5 MiB line: %v, want an error", err)
	}
}

// The reader never panics, and what it reads does not depend on how the
// input is cut into reads.
func FuzzEventReader(f *testing.F) {
	for _, s := range []string{"id: 16\ndata: {\"next\":16}\nevent: ready\nretry: 2000\n\n", ": keepalive\n\n", "data:a\r\ndata:b\r\n\r\n", "id\n\n", ":\n", "data\n\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		whole, err1 := readAll(strings.NewReader(in))
		bytewise, err2 := readAll(iotest.OneByteReader(strings.NewReader(in)))
		if fmt.Sprint(whole) != fmt.Sprint(bytewise) || !errors.Is(err2, err1) && err1 != err2 {
			t.Fatalf("whole %+v %v, byte by byte %+v %v", whole, err1, bytewise, err2)
		}
	})
}
