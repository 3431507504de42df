package turn

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// lockedBuffer collects a child process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeLoopbackPort returns a port free for both UDP and TCP on 127.0.0.1.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// startCoturn runs Debian's turnserver on 127.0.0.1 with the TURN REST API
// secret; it is killed at cleanup. It returns the listening address.
func startCoturn(t *testing.T, secret, realm string) string {
	t.Helper()
	bin := lookTool(t, "turnserver")
	dir := t.TempDir()
	port := freeLoopbackPort(t)
	relayMin := 20000 + port%20000 // keep the relay range away from ports in use by others
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"-n", // no configuration file
		"--listening-ip=127.0.0.1",
		"--relay-ip=127.0.0.1",
		"--listening-port="+strconv.Itoa(port),
		"--min-port="+strconv.Itoa(relayMin),
		"--max-port="+strconv.Itoa(relayMin+200),
		"--use-auth-secret",
		"--static-auth-secret="+secret,
		"--realm="+realm,
		"--allow-loopback-peers",
		"--no-cli", "--no-tls", "--no-dtls",
		"--log-file=stdout", "--simple-log",
		"--pidfile="+dir+"/turnserver.pid",
		"--userdb="+dir+"/turndb",
	)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start turnserver: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("turnserver output:\n%s", out.String())
		}
	})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conn := rawClient(t, "udp4", addr)
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		conn.WriteTo(binding.Raw, conn.server)
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := conn.ReadFrom(buf); err == nil && stun.IsMessage(buf[:n]) {
			return addr
		}
	}
	t.Fatalf("turnserver did not answer on %s within 20s:\n%s", addr, out.String())
	return ""
}

// TestCoturnAcceptsCredentials checks interoperability: a real coturn with
// use-auth-secret and static-auth-secret accepts the credentials
// Credentials issues (allocation and an authenticated CreatePermission),
// and refuses forged and expired ones, as the embedded server does.
func TestCoturnAcceptsCredentials(t *testing.T) {
	const secret = "coturn-shared-secret-5f1c0e"
	addr := startCoturn(t, secret, "coturn.test")

	cr := creds([]byte(secret))
	cr.Extra = []string{"turn:" + addr + "?transport=udp"}
	cr.URLs = nil
	servers := cr.ICEServers("client-1")
	if len(servers) != 1 || servers[0].Username == "" {
		t.Fatalf("ICEServers = %+v, want one turn entry with credentials", servers)
	}
	user, pass := servers[0].Username, servers[0].Credential

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			client := newClient(t, network, addr, user, pass)
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("coturn refused a tincan credential: %v", err)
			}
			defer relay.Close()
			if err := client.CreatePermission(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); err != nil {
				t.Errorf("CreatePermission on coturn: %v", err)
			}
		})
	}

	expired := creds([]byte(secret))
	expired.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	for name, c := range map[string]Credentials{
		"forged":  creds([]byte("not-the-secret")),
		"expired": expired,
	} {
		t.Run(name, func(t *testing.T) {
			user, pass := userPass(t, c, "client-1")
			client := newClient(t, "udp", addr, user, pass)
			if relay, err := client.Allocate(); err == nil {
				relay.Close()
				t.Fatalf("coturn accepted a %s credential", name)
			}
		})
	}
}

// uclientLoss matches turnutils_uclient's summary line, e.g.
// "Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)".
var uclientLoss = regexp.MustCompile(`Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+) \(([\d.]+)%\)`)

// uclientCounts matches "tot_send_msgs=800, tot_recv_msgs=800" (with or
// without spaces, as coturn versions print it).
var uclientCounts = regexp.MustCompile(`tot_send_msgs=(\d+),\s*tot_recv_msgs=(\d+)`)

// TestUclientThroughEmbeddedServer runs coturn's turnutils_uclient against
// the embedded server on loopback: pairs of clients allocate relays and
// send to each other through them (-y), over UDP and over TCP, at a
// moderate rate; no message may be lost.
func TestUclientThroughEmbeddedServer(t *testing.T) {
	bin := lookTool(t, "turnutils_uclient")
	s, reg := startServer(t, func(c *Config) { c.AllowLoopback = true }) // the clients' relays are on 127.0.0.1
	cr := Credentials{Secret: testSecret, TTL: time.Hour, URLs: s.URLs()}
	user, pass := userPass(t, cr, "uclient")

	const (
		clients  = 4   // -m: two pairs
		messages = 250 // -n per client
		length   = 200 // -l bytes
		interval = 20  // -z ms: 50 messages/s per client
	)
	for _, tc := range []struct{ name, flag string }{{"udp", ""}, {"tcp", "-t"}} {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, reg, "tincan_turn_relayed_bytes_total", "direction", "to_peer")
			args := []string{
				"-y", "-c",
				"-m", strconv.Itoa(clients),
				"-n", strconv.Itoa(messages),
				"-l", strconv.Itoa(length),
				"-z", strconv.Itoa(interval),
				"-L", "127.0.0.1",
				"-p", strconv.Itoa(s.Port()),
				"-u", user, "-w", pass,
			}
			if tc.flag != "" {
				args = append([]string{tc.flag}, args...)
			}
			args = append(args, "127.0.0.1")
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			start := time.Now()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("turnutils_uclient %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			m := uclientLoss.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no loss summary in turnutils_uclient output:\n%s", out)
			}
			lost, _ := strconv.Atoi(string(m[1]))
			dropped, _ := strconv.Atoi(string(m[3]))
			sent, recv := -1, -1
			if c := lastMatch(uclientCounts, out); c != nil {
				sent, _ = strconv.Atoi(string(c[1]))
				recv, _ = strconv.Atoi(string(c[2]))
			}
			relayed := metric(t, reg, "tincan_turn_relayed_bytes_total", "direction", "to_peer") - before
			t.Logf("turnutils_uclient over %s: %d clients x %d messages of %d bytes every %d ms: sent %d, received %d, lost %d (%s%%), send dropped %d, %.1fs, server relayed %.0f bytes to peers",
				tc.name, clients, messages, length, interval, sent, recv, lost, m[2], dropped, elapsed.Seconds(), relayed)
			if lost != 0 || dropped != 0 {
				t.Errorf("lost %d, send dropped %d; want 0%% loss\n%s", lost, dropped, tail(out, 30))
			}
			if sent != clients*messages || recv != sent {
				t.Errorf("sent %d, received %d; want %d each\n%s", sent, recv, clients*messages, tail(out, 30))
			}
			if relayed < float64(clients*messages*length) {
				t.Errorf("server relayed %.0f bytes to peers, want at least %d", relayed, clients*messages*length)
			}
		})
	}
}

func lastMatch(re *regexp.Regexp, b []byte) [][]byte {
	all := re.FindAllSubmatch(b, -1)
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintln(strings.Join(lines, "\n"))
}
