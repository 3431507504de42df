package handlers

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"time"
)

// rawResponse is the http.ResponseWriter of a hijacked HTTP/1.x connection.
// It buffers what r3labs writes and sends it on Flush, the head first. The
// body ends when the connection closes (Connection: close), so it needs no
// chunked encoding.
type rawResponse struct {
	conn   net.Conn
	proto  string // the request's: an HTTP/1.0 client gets an HTTP/1.0 answer
	header http.Header
	status int
	buf    []byte
}

func (r *rawResponse) Header() http.Header { return r.header }

func (r *rawResponse) WriteHeader(code int) {
	if r.status != 0 {
		return
	}
	r.status = code
	r.header.Set("Connection", "close")
	r.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %03d %s\r\n", r.proto, code, http.StatusText(code))
	r.header.Write(&head)
	head.WriteString("\r\n")
	r.buf = append(r.buf, head.Bytes()...)
	r.header = http.Header{} // sent: later changes go nowhere, as in net/http
}

func (r *rawResponse) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	r.buf = append(r.buf, p...)
	return len(p), nil
}

// FlushError sends what is buffered. http.ResponseController calls it.
func (r *rawResponse) FlushError() error {
	r.WriteHeader(http.StatusOK)
	_, err := r.conn.Write(r.buf)
	r.buf = r.buf[:0]
	if cap(r.buf) > 1024 { // do not hold a large frame's buffer while idle
		r.buf = nil
	}
	return err
}

func (r *rawResponse) Flush() { r.FlushError() }

// SetWriteDeadline is for http.ResponseController.
func (r *rawResponse) SetWriteDeadline(t time.Time) error { return r.conn.SetWriteDeadline(t) }
