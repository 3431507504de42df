package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"slices"
	"strings"
)

// Algorithms each kind of key may verify. The token's alg must be in the list
// of the key that verifies it: the key pins the algorithm, never the token.
var (
	hmacAlgs    = []string{"HS256", "HS384", "HS512"}
	rsaAlgs     = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ed25519Algs = []string{"EdDSA"}
	// asymmetricAlgs is what a JWKS may come to hold after a refetch.
	asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// minRSABits is the smallest RSA modulus accepted from a file or a JWKS.
const minRSABits = 2048

// maxJWKSBytes bounds a JWKS response; maxJWKSKeys bounds the keys kept from it.
const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 100
)

// key is one verification key with the algorithms it may verify.
type key struct {
	kid    string   // "" for secrets and PEM keys (and JWKS keys without kid)
	kind   string   // "HMAC secret", "RSA", "ECDSA P-256", "Ed25519" for Details
	pub    any      // []byte, *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey
	algs   []string // the algorithms this key verifies
	remote bool     // from the JWKS
}

func (k *key) allows(alg string) bool { return slices.Contains(k.algs, alg) }

// publicKey turns a parsed public key into a key, pinning its algorithms by
// its type (and for ECDSA by its curve).
func publicKey(pub any) (*key, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N == nil || p.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits: at least %d are required", bitLen(p.N), minRSABits)
		}
		return &key{kind: "RSA", pub: p, algs: rsaAlgs}, nil
	case *ecdsa.PublicKey:
		var alg string
		switch p.Curve {
		case elliptic.P256():
			alg = "ES256"
		case elliptic.P384():
			alg = "ES384"
		case elliptic.P521():
			alg = "ES512"
		default:
			return nil, errors.New("ECDSA key on an unsupported curve (P-256, P-384 and P-521 are)")
		}
		return &key{kind: "ECDSA " + p.Curve.Params().Name, pub: p, algs: []string{alg}}, nil
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return nil, errors.New("Ed25519 key of the wrong size")
		}
		return &key{kind: "Ed25519", pub: p, algs: ed25519Algs}, nil
	case *ed25519.PublicKey:
		if p == nil {
			return nil, errors.New("nil Ed25519 key")
		}
		return publicKey(*p)
	default:
		return nil, fmt.Errorf("unsupported public key type %T (RSA, ECDSA and Ed25519 are)", pub)
	}
}

func bitLen(n *big.Int) int {
	if n == nil {
		return 0
	}
	return n.BitLen()
}

// readPEMFile reads every public key of a PEM file ("PUBLIC KEY",
// "RSA PUBLIC KEY" or "CERTIFICATE" blocks). A file without any, with a
// private key, or with a block that does not parse is an error.
func readPEMFile(path string) ([]*key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []*key
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var pub any
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE") {
				return nil, fmt.Errorf("PEM block %d is a %s: give the public key, the server needs no private key", n, block.Type)
			}
			return nil, fmt.Errorf("PEM block %d is a %q, not a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		k, err := publicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM block found")
	}
	return keys, nil
}

// jwk is the part of RFC 7517/7518/8037 JSON Web Key that matters here.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS parses a JWKS document. Keys it cannot use (symmetric "oct"
// keys, encryption keys, unknown types, weak RSA, points off the curve, an
// alg the key type cannot do) are skipped and reported in skipped; a document
// with no usable key at all is an error.
func parseJWKS(body []byte) (keys []*key, skipped []string, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	for i, raw := range doc.Keys {
		if len(keys) == maxJWKSKeys {
			skipped = append(skipped, fmt.Sprintf("keys after the first %d", maxJWKSKeys))
			break
		}
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		k, err := j.key()
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, j.Kid, err))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("the JWKS holds no usable signing key (%d keys, skipped: %s)", len(doc.Keys), strings.Join(skipped, "; "))
	}
	return keys, skipped, nil
}

func (j *jwk) key() (*key, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, fmt.Errorf("use %q is not sig", j.Use)
	}
	b64 := base64.RawURLEncoding
	var pub any
	switch j.Kty {
	case "RSA":
		n, err1 := b64.DecodeString(j.N)
		e, err2 := b64.DecodeString(j.E)
		if err := errors.Join(err1, err2); err != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA n or e")
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return nil, errors.New("bad RSA exponent")
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err1 := b64.DecodeString(j.X)
		y, err2 := b64.DecodeString(j.Y)
		if err := errors.Join(err1, err2); err != nil || len(x) != size || len(y) != size {
			return nil, errors.New("bad EC x or y")
		}
		p, err := ecdsa.ParseUncompressedPublicKey(curve, slices.Concat([]byte{4}, x, y))
		if err != nil {
			return nil, err
		}
		pub = p
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported OKP curve %q", j.Crv)
		}
		x, err := b64.DecodeString(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 x")
		}
		pub = ed25519.PublicKey(x)
	case "oct":
		return nil, errors.New("symmetric keys are never taken from a JWKS")
	default:
		return nil, fmt.Errorf("unsupported kty %q", j.Kty)
	}
	k, err := publicKey(pub)
	if err != nil {
		return nil, err
	}
	if j.Alg != "" {
		if !k.allows(j.Alg) {
			return nil, fmt.Errorf("alg %q does not fit a %s key", j.Alg, k.kind)
		}
		k.algs = []string{j.Alg}
	}
	k.kid = j.Kid
	k.remote = true
	return k, nil
}

// fetchJWKS GETs and parses the JWKS at url.
func fetchJWKS(ctx context.Context, client *http.Client, url string) ([]*key, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(body) > maxJWKSBytes {
		return nil, nil, fmt.Errorf("GET %s: the JWKS is larger than %d bytes", url, maxJWKSBytes)
	}
	return parseJWKS(body)
}
