// Command etcdlocal runs an etcd cluster of -members members on loopback,
// in this one process, until it is interrupted: the etcd that `tincan
// bench` measures cluster mode against on a machine without an etcd
// binary. It prints the client URLs as -etcd takes them, then serves.
//
//	go run ./bench/etcdlocal -members 3 &
//	tincan -etcd http://127.0.0.1:…,… -addr 127.0.0.1:18080 &
//
// Not for production: the data lives in a temporary directory, removed
// at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

func main() {
	members := flag.Int("members", 3, "members of the cluster")
	flag.Parse()
	if err := run(*members); err != nil {
		fmt.Fprintln(os.Stderr, "etcdlocal:", err)
		os.Exit(1)
	}
}

func run(members int) error {
	dir, err := os.MkdirTemp("", "etcdlocal-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := etcdtest.StartIn(dir, etcdtest.Config{Members: members, Direct: true})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println(strings.Join(c.Endpoints(), ","))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
