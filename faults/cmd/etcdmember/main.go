// Command etcdmember runs one etcd member, etcd's own server from the
// module's go.etcd.io/etcd/server/v3 (the version in go.mod, started
// through its embed package), as a process of its own: the fault suite
// kills it with SIGKILL, stops it with SIGSTOP and cuts its network, which
// a member inside the test process cannot be made to suffer.
//
// It takes the subset of etcd's flags the suite needs, under etcd's names:
//
//	etcdmember --name m0 --data-dir DIR \
//	  --listen-peer-urls http://127.0.0.1:P --initial-advertise-peer-urls http://127.0.0.1:Q \
//	  --listen-client-urls http://127.0.0.1:C --advertise-client-urls http://127.0.0.1:C \
//	  --initial-cluster m0=http://127.0.0.1:Q,... --initial-cluster-token T --initial-cluster-state new
//
// It prints "etcdmember ready" on stdout once the member serves, exits 1
// when it cannot start, and stops gracefully on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "etcdmember:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := embed.NewConfig()
	fs := flag.NewFlagSet("etcdmember", flag.ContinueOnError)
	var listenPeer, advertisePeer, listenClient, advertiseClient string
	fs.StringVar(&cfg.Name, "name", "default", "member name")
	fs.StringVar(&cfg.Dir, "data-dir", "", "data directory")
	fs.StringVar(&listenPeer, "listen-peer-urls", "", "peer URLs to listen on")
	fs.StringVar(&advertisePeer, "initial-advertise-peer-urls", "", "peer URLs the other members reach this one at")
	fs.StringVar(&listenClient, "listen-client-urls", "", "client URLs to listen on")
	fs.StringVar(&advertiseClient, "advertise-client-urls", "", "client URLs to advertise")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "name=peerURL,… of every member")
	fs.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", "etcd-cluster", "cluster token")
	fs.StringVar(&cfg.ClusterState, "initial-cluster-state", embed.ClusterStateFlagNew, "new or existing")
	fs.UintVar(&cfg.TickMs, "heartbeat-interval", cfg.TickMs, "heartbeat interval (ms)")
	fs.UintVar(&cfg.ElectionMs, "election-timeout", cfg.ElectionMs, "election timeout (ms)")
	fs.StringVar(&cfg.LogLevel, "log-level", "warn", "debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Dir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	for _, f := range []struct {
		name string
		in   string
		out  *[]url.URL
	}{
		{"listen-peer-urls", listenPeer, &cfg.ListenPeerUrls},
		{"initial-advertise-peer-urls", advertisePeer, &cfg.AdvertisePeerUrls},
		{"listen-client-urls", listenClient, &cfg.ListenClientUrls},
		{"advertise-client-urls", advertiseClient, &cfg.AdvertiseClientUrls},
	} {
		if f.in == "" {
			continue
		}
		var us []url.URL
		for _, s := range strings.Split(f.in, ",") {
			u, err := url.Parse(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("--%s: %w", f.name, err)
			}
			us = append(us, *u)
		}
		*f.out = us
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("etcdmember ready")
	case err := <-e.Err():
		return err
	case <-time.After(time.Minute):
		return fmt.Errorf("not ready after a minute")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		return nil
	case err := <-e.Err():
		return err
	}
}
