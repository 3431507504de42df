package handlers

import "net"

// A hijacked connection has no net/http goroutine reading it, so nothing
// notices when its reader hangs up. hangups does: it calls gone once the
// peer has closed the connection (or half-closed it: a reader of an event
// stream sends nothing). Linux has one epoll set for all connections
// (hangup_linux.go), so that an idle stream costs no goroutine for this;
// elsewhere every connection gets a goroutine blocked in Read.
type hangups interface {
	// watch starts watching conn; stop, called before conn is closed,
	// ends it.
	watch(conn net.Conn, gone func()) (stop func())
	// close stops the watcher; call it after every stop.
	close()
}

// readHangups watches each connection with a goroutine blocked in Read,
// which returns when the reader hangs up or the connection is closed.
type readHangups struct{}

func (readHangups) watch(conn net.Conn, gone func()) func() {
	go func() {
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				gone()
				return
			}
		}
	}()
	return func() {}
}

func (readHangups) close() {}
