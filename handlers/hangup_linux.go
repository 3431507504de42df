package handlers

import (
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// epollHangups watches every hijacked connection with one epoll set, for
// EPOLLRDHUP: one goroutine for all of them instead of one each. Each
// registration carries its own number, not the fd, so that an event for a
// connection closed meanwhile (its fd perhaps reused) finds nothing.
type epollHangups struct {
	epfd    int
	wake    [2]int // a pipe: writing to it ends run
	stopped chan struct{}

	mu   sync.Mutex
	next uint32
	gone map[uint32]func()
}

func newHangups() hangups {
	h := &epollHangups{gone: map[uint32]func(){}, stopped: make(chan struct{})}
	var err error
	if h.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return readHangups{}
	}
	if err := unix.Pipe2(h.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(h.epfd)
		return readHangups{}
	}
	// Number 0 is the wake-up pipe.
	if err := unix.EpollCtl(h.epfd, unix.EPOLL_CTL_ADD, h.wake[0], &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(h.epfd)
		unix.Close(h.wake[0])
		unix.Close(h.wake[1])
		return readHangups{}
	}
	go h.run()
	return h
}

func (h *epollHangups) watch(conn net.Conn, gone func()) func() {
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = tc.NetConn() // TLS: watch the TCP connection under it
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return readHangups{}.watch(conn, gone)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return readHangups{}.watch(conn, gone)
	}
	h.mu.Lock()
	h.next++
	for h.next == 0 || h.gone[h.next] != nil { // 0 is the pipe; skip numbers in use after a wrap
		h.next++
	}
	id := h.next
	h.gone[id] = gone
	h.mu.Unlock()

	var cerr error
	err = raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(id)}
		cerr = unix.EpollCtl(h.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || cerr != nil {
		h.forget(id)
		return readHangups{}.watch(conn, gone)
	}
	return func() {
		h.forget(id)
		raw.Control(func(fd uintptr) { unix.EpollCtl(h.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	}
}

func (h *epollHangups) forget(id uint32) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	gone := h.gone[id]
	delete(h.gone, id)
	return gone
}

func (h *epollHangups) run() {
	defer close(h.stopped)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(h.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			id := uint32(ev.Fd)
			if id == 0 {
				return // close
			}
			if gone := h.forget(id); gone != nil {
				gone()
			}
		}
	}
}

func (h *epollHangups) close() {
	unix.Write(h.wake[1], []byte{0})
	<-h.stopped
	unix.Close(h.epfd)
	unix.Close(h.wake[0])
	unix.Close(h.wake[1])
}
