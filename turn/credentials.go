package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST API scheme prescribes.
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pion/stun/v4"
)

// DefaultTTL is the credential lifetime used when Credentials.TTL is not positive.
const DefaultTTL = time.Hour

// maxClientIDLen bounds the client id inside a TURN username. STUN limits a
// USERNAME to 513 bytes; 19 digits and a colon leave more than this.
const maxClientIDLen = 256

// ICEServer is one entry of the contract's "ice_servers" list, the shape of
// an RTCIceServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Credentials issues TURN REST API credentials (draft-uberti-behave-turn-rest):
// username "<unix-expiry>:<clientID>" and credential
// base64(HMAC-SHA1(Secret, username)). coturn with use-auth-secret and
// static-auth-secret set to the same secret accepts them too.
type Credentials struct {
	// Secret is the shared secret (coturn's static-auth-secret, as bytes).
	// With an empty Secret no TURN entries are issued.
	Secret []byte
	// TTL is how long an issued credential stays valid; DefaultTTL when not positive.
	TTL time.Duration
	// URLs are the embedded server's URLs (EmbeddedURLs or Server.URLs); may be empty.
	URLs []string
	// Extra are further ICE server URLs (the -ice-server values). stun: and
	// stuns: URLs are handed out without credentials, turn: and turns: URLs
	// with credentials from Secret; other schemes are left out (check them
	// at startup with CheckURL).
	Extra []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ICEServers returns the "ice_servers" list for clientID: one entry with the
// stun: URLs of the embedded server, one with its turn: URLs and fresh
// credentials, then one with the Extra stun:/stuns: URLs and one with the
// Extra turn:/turns: URLs and the same credentials. Empty entries are left
// out. TURN entries are left out too when Secret or clientID is empty (the
// server refuses such credentials). It never returns nil.
func (c Credentials) ICEServers(clientID string) []ICEServer {
	servers := []ICEServer{}
	username, credential := c.issue(clientID)
	add := func(urls []string, withCredentials bool) {
		var stunURLs, turnURLs []string
		for _, u := range urls {
			switch urlScheme(u) {
			case "stun", "stuns":
				stunURLs = append(stunURLs, u)
			case "turn", "turns":
				turnURLs = append(turnURLs, u)
			}
		}
		if len(stunURLs) > 0 {
			servers = append(servers, ICEServer{URLs: stunURLs})
		}
		if len(turnURLs) > 0 && withCredentials {
			servers = append(servers, ICEServer{URLs: turnURLs, Username: username, Credential: credential})
		}
	}
	ok := len(c.Secret) > 0 && clientID != ""
	add(c.URLs, ok)
	add(c.Extra, ok)
	return servers
}

// issue returns the username and credential for clientID.
func (c Credentials) issue(clientID string) (username, credential string) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	username = strconv.FormatInt(now().Add(ttl).Unix(), 10) + ":" + clientID
	return username, credentialFor(c.Secret, username)
}

// credentialFor is base64(HMAC-SHA1(secret, username)).
func credentialFor(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// urlScheme returns the lower-cased scheme of an ICE URL ("stun", "turn", ...).
func urlScheme(u string) string {
	scheme, _, ok := strings.Cut(u, ":")
	if !ok {
		return ""
	}
	return strings.ToLower(scheme)
}

// EmbeddedURLs returns the embedded server's URLs for publicIP and port:
// stun:IP:PORT, turn:IP:PORT?transport=udp and turn:IP:PORT?transport=tcp,
// with an IPv6 address in brackets. It returns nil when publicIP is empty.
func EmbeddedURLs(publicIP string, port int) []string {
	if publicIP == "" {
		return nil
	}
	hostPort := net.JoinHostPort(strings.Trim(publicIP, "[]"), strconv.Itoa(port))
	return []string{
		"stun:" + hostPort,
		"turn:" + hostPort + "?transport=udp",
		"turn:" + hostPort + "?transport=tcp",
	}
}

// CheckURL reports whether rawURL is an ICE server URL that ICEServers hands
// out: a stun:, stuns:, turn: or turns: URI (RFC 7064, RFC 7065) with a host.
func CheckURL(rawURL string) error {
	switch urlScheme(rawURL) {
	case "stun", "stuns", "turn", "turns":
	default:
		return fmt.Errorf("ice server %q: the scheme must be stun, stuns, turn or turns", rawURL)
	}
	if _, err := stun.ParseURI(rawURL); err != nil {
		return fmt.Errorf("ice server %q: %w", rawURL, err)
	}
	return nil
}

var (
	errUsernameFormat = errors.New(`username is not "<unix-expiry>:<client-id>"`)
	errUsernameExpiry = errors.New("username expiry is not a decimal unix time")
)

// parseUsername splits a TURN REST username "<unix-expiry>:<clientID>" at
// its first colon. The expiry is 1 to 19 ASCII digits (no sign) that fit an
// int64; the client id is 1 to maxClientIDLen bytes and may contain colons.
func parseUsername(username string) (expiry int64, clientID string, err error) {
	digits, clientID, ok := strings.Cut(username, ":")
	if !ok || clientID == "" || len(clientID) > maxClientIDLen {
		return 0, "", errUsernameFormat
	}
	if len(digits) == 0 || len(digits) > 19 {
		return 0, "", errUsernameExpiry
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, "", errUsernameExpiry
		}
	}
	expiry, err = strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, "", errUsernameExpiry
	}
	return expiry, clientID, nil
}
