package turn

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons an allocation is refused (label "reason" of
// tincan_turn_allocations_refused_total).
const (
	refusedUserQuota  = "user_quota"  // MaxAllocationsPerUser reached
	refusedTotalQuota = "total_quota" // MaxAllocations reached
	refusedNoPort     = "no_port"     // no free port in the relay range
	refusedFamily     = "family"      // address family the relay address cannot serve
	refusedTCP        = "tcp_relay"   // RFC 6062 TCP relay requested
)

// Reasons an authenticated request is refused (label "reason" of
// tincan_turn_auth_failures_total).
const (
	authMalformed = "malformed" // username is not "<expiry>:<client-id>"
	authExpired   = "expired"
	authRealm     = "realm"     // realm differs from the server's
	authIntegrity = "integrity" // MESSAGE-INTEGRITY does not match (wrong HMAC)
)

type metrics struct {
	active   prometheus.Gauge
	created  prometheus.Counter
	refused  *prometheus.CounterVec
	relayed  *prometheus.CounterVec
	toPeer   prometheus.Counter // relayed{direction="to_peer"}
	fromPeer prometheus.Counter // relayed{direction="from_peer"}
	denied   prometheus.Counter
	authFail *prometheus.CounterVec
	dropped  prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tincan_turn_allocations_active",
			Help: "TURN allocations currently open on the embedded server.",
		}),
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_turn_allocations_created_total",
			Help: "TURN allocations created by the embedded server.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tincan_turn_allocations_refused_total",
			Help: "TURN allocations refused after authentication, by reason (user_quota, total_quota, no_port, family, tcp_relay).",
		}, []string{"reason"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tincan_turn_relayed_bytes_total",
			Help: "Payload bytes that relay sockets sent to peers and received from peers, by direction (to_peer, from_peer).",
		}, []string{"direction"}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_turn_peer_denied_total",
			Help: "Permissions and datagrams refused by the peer address policy.",
		}),
		authFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tincan_turn_auth_failures_total",
			Help: "Authenticated TURN requests refused, by reason (malformed, expired, realm, integrity).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_turn_malformed_packets_total",
			Help: "Inbound UDP packets dropped because parsing them panicked.",
		}),
	}
	// Export every label value from the start, at zero.
	for _, r := range []string{refusedUserQuota, refusedTotalQuota, refusedNoPort, refusedFamily, refusedTCP} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{authMalformed, authExpired, authRealm, authIntegrity} {
		m.authFail.WithLabelValues(r)
	}
	m.toPeer = m.relayed.WithLabelValues("to_peer")
	m.fromPeer = m.relayed.WithLabelValues("from_peer")
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.active, m.created, m.refused, m.relayed, m.denied, m.authFail, m.dropped}
}

// register registers every collector on r, undoing the registrations made
// so far when one fails.
func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	var done []prometheus.Collector
	for _, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			for _, d := range done {
				r.Unregister(d)
			}
			return fmt.Errorf("register turn metrics: %w", err)
		}
		done = append(done, c)
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	if r == nil {
		return
	}
	for _, c := range m.collectors() {
		r.Unregister(c)
	}
}
