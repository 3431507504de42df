// Package jwtauth verifies join tokens: JWTs that an application issues to its
// users so that they may join a tincan room as a known identity.
//
// A join token carries sub (the member's identity), room (the room, or "*"),
// exp, and optionally nbf, name and metadata. It is verified against keys the
// operator configures: HMAC secrets (HS256/384/512, several for rotation),
// public keys from PEM files or parsed (RSA: RS*/PS*, ECDSA: the ES* of its
// curve, Ed25519: EdDSA), and a JWKS URL. The key pins the algorithm, never
// the token: a token whose alg does not fit the key that would verify it is
// refused, "none" always.
//
// The package knows no HTTP handler and no store: handlers call Verify and
// map an *Error to their answer.
package jwtauth

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults of Config.
const (
	DefaultLeeway = 30 * time.Second
	// DefaultJWKSRefresh is how often the JWKS is fetched again in the background.
	DefaultJWKSRefresh = 5 * time.Minute
	// KidRefetchInterval is the least time between two fetches of the JWKS;
	// a token with an unknown kid triggers a fetch only when the last one is
	// older, so a flood of random kids cannot become a fetch loop.
	KidRefetchInterval = 30 * time.Second
	// jwksTimeout bounds one fetch when Config.HTTPClient is nil.
	jwksTimeout = 10 * time.Second
)

// Config says which keys verify join tokens and which claims they must carry.
// At least one of Secrets, PublicKeyFiles, PublicKeys and JWKSURL is required.
type Config struct {
	// Secrets are HMAC secrets (HS256, HS384, HS512). A token verified by any
	// of them is admitted, so that a secret can be rotated: list the new and
	// the old until the old tokens have expired. A secret must not be empty
	// nor a PEM document (a public key is no secret).
	Secrets [][]byte
	// PublicKeyFiles are PEM files of PUBLIC KEY, RSA PUBLIC KEY or
	// CERTIFICATE blocks (several per file allowed). RSA keys (at least 2048
	// bits) verify RS256/384/512 and PS256/384/512; ECDSA keys verify the one
	// ES algorithm of their curve (P-256: ES256, P-384: ES384, P-521: ES512);
	// Ed25519 keys verify EdDSA.
	PublicKeyFiles []string
	// PublicKeys are parsed public keys (*rsa.PublicKey, *ecdsa.PublicKey,
	// ed25519.PublicKey), under the same rules as PublicKeyFiles.
	PublicKeys []crypto.PublicKey
	// JWKSURL is a JSON Web Key Set to fetch at New and every JWKSRefresh.
	// Its keys are chosen by the token's kid; "oct" (symmetric) keys and keys
	// with a use other than "sig" are ignored; a key's alg, when given,
	// narrows it to that algorithm.
	JWKSURL string
	// JWKSRefresh is the period of the background refresh; 0 means
	// DefaultJWKSRefresh. A failed refresh keeps the previous set.
	JWKSRefresh time.Duration
	// Audience, when set, must be in the token's aud.
	Audience string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Leeway is the clock skew allowed on exp and nbf; 0 means
	// DefaultLeeway, a negative value no leeway.
	Leeway time.Duration
	// HTTPClient fetches the JWKS; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock for exp, nbf and the kid refetch interval; nil means time.Now.
	Now func() time.Time
	// Logger receives JWKS fetch failures and skipped keys; nil means slog.Default().
	Logger *slog.Logger
}

// Verifier verifies join tokens. It is safe for concurrent use.
type Verifier struct {
	cfg      Config
	leeway   time.Duration
	client   *http.Client
	log      *slog.Logger
	static   []*key // secrets and configured public keys
	fetchSem chan struct{}

	mu        sync.RWMutex
	remote    []*key    // the current JWKS keys
	lastFetch time.Time // the start of the last JWKS fetch (by Config.Now)
}

// New checks the configuration, reads the key files and, when JWKSURL is set,
// fetches the JWKS (which must succeed and hold a usable key). It fails when
// the config has no key at all, a secret is empty or a PEM document, or a key
// file is unreadable, holds no public key, holds a private key or a key of an
// unsupported type or size. With a JWKSURL it starts a refresh every
// JWKSRefresh that runs until ctx is done.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	v := &Verifier{cfg: cfg, leeway: cfg.Leeway, client: cfg.HTTPClient, log: cfg.Logger, fetchSem: make(chan struct{}, 1)}
	switch {
	case v.leeway == 0:
		v.leeway = DefaultLeeway
	case v.leeway < 0:
		v.leeway = 0
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: jwksTimeout}
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	if v.cfg.Now == nil {
		v.cfg.Now = time.Now
	}
	if v.cfg.JWKSRefresh <= 0 {
		v.cfg.JWKSRefresh = DefaultJWKSRefresh
	}
	for i, s := range cfg.Secrets {
		switch {
		case len(s) == 0:
			return nil, fmt.Errorf("jwtauth: secret %d is empty", i+1)
		case bytes.Contains(s, []byte("-----BEGIN")):
			return nil, fmt.Errorf("jwtauth: secret %d is a PEM document; give public keys as PublicKeyFiles", i+1)
		case len(s) < 32:
			v.log.Warn("jwtauth: an HMAC secret shorter than 32 bytes is easy to guess", "secret", i+1, "bytes", len(s))
		}
		v.static = append(v.static, &key{kind: "HMAC secret", pub: bytes.Clone(s), algs: hmacAlgs})
	}
	for _, path := range cfg.PublicKeyFiles {
		keys, err := readPEMFile(path)
		if err != nil {
			return nil, fmt.Errorf("jwtauth: key file %s: %w", path, err)
		}
		v.static = append(v.static, keys...)
	}
	for i, pub := range cfg.PublicKeys {
		k, err := publicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("jwtauth: public key %d: %w", i+1, err)
		}
		v.static = append(v.static, k)
	}
	if len(v.static) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("jwtauth: no key configured (give secrets, public key files or a JWKS URL)")
	}
	if cfg.JWKSURL != "" {
		if err := v.refresh(ctx); err != nil {
			return nil, fmt.Errorf("jwtauth: JWKS: %w", err)
		}
		go v.refreshLoop(ctx)
	}
	return v, nil
}

// refresh fetches the JWKS once (one fetch at a time) and installs it; on
// failure the previous set stays.
func (v *Verifier) refresh(ctx context.Context) error {
	select {
	case v.fetchSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-v.fetchSem }()
	return v.fetchLocked(ctx)
}

func (v *Verifier) fetchLocked(ctx context.Context) error {
	v.mu.Lock()
	v.lastFetch = v.cfg.Now()
	v.mu.Unlock()
	keys, skipped, err := fetchJWKS(ctx, v.client, v.cfg.JWKSURL)
	if err != nil {
		return err
	}
	if len(skipped) > 0 {
		v.log.Warn("jwtauth: JWKS keys skipped", "url", v.cfg.JWKSURL, "skipped", strings.Join(skipped, "; "))
	}
	v.mu.Lock()
	v.remote = keys
	v.mu.Unlock()
	return nil
}

func (v *Verifier) refreshLoop(ctx context.Context) {
	t := time.NewTicker(v.cfg.JWKSRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.refresh(ctx); err != nil && ctx.Err() == nil {
				v.log.Warn("jwtauth: JWKS refresh failed, keeping the previous keys", "url", v.cfg.JWKSURL, "err", err)
			}
		}
	}
}

// refetchForKid fetches the JWKS again because a token names an unknown kid,
// unless a fetch started less than KidRefetchInterval ago. Callers look the
// kid up again afterwards either way (a concurrent fetch may have brought it).
func (v *Verifier) refetchForKid(ctx context.Context) {
	if v.cfg.JWKSURL == "" {
		return
	}
	select {
	case v.fetchSem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-v.fetchSem }()
	v.mu.RLock()
	recent := v.cfg.Now().Sub(v.lastFetch) < KidRefetchInterval
	v.mu.RUnlock()
	if recent {
		return
	}
	// The fetch outlives a caller that gives up: others wait for its result.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksTimeout)
	defer cancel()
	if err := v.fetchLocked(fctx); err != nil {
		v.log.Warn("jwtauth: JWKS refetch for an unknown kid failed, keeping the previous keys", "url", v.cfg.JWKSURL, "err", err)
	}
}

// keysFor returns the keys a token with this kid could be signed with:
// with a kid, the JWKS keys of that kid and else the keys without a kid
// (secrets, PEM keys); without a kid, every key.
func (v *Verifier) keysFor(kid string) (keys []*key, kidFound bool) {
	v.mu.RLock()
	remote := v.remote
	v.mu.RUnlock()
	if kid != "" {
		for _, k := range remote {
			if k.kid == kid {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			return keys, true
		}
		return v.static, false
	}
	return slices.Concat(v.static, remote), false
}

// validMethods is every algorithm some key could verify: the parser's first
// gate. The key chosen for the token is the second.
func (v *Verifier) validMethods() []string {
	var algs []string
	if v.cfg.JWKSURL != "" {
		algs = slices.Clone(asymmetricAlgs)
	}
	for _, k := range v.static {
		algs = append(algs, k.algs...)
	}
	slices.Sort(algs)
	return slices.Compact(algs)
}

// Verify verifies token for joining room and returns its claims. It checks,
// in this order: the token's form (at most MaxTokenLen, three base64url
// segments of JSON); its alg against the keys (never none; only an alg the
// chosen key allows); the kid (an unknown kid refetches the JWKS at most once
// per KidRefetchInterval); the signature; exp (required), nbf (optional),
// with the leeway; aud and iss when configured; then sub (required, at most
// MaxSubjectLen bytes), room (required, equal to room or "*"), name
// (optional string, at most MaxNameLen characters) and metadata (optional
// JSON, at most MaxMetadataLen bytes compact). Claims of a token whose
// signature does not verify are never looked at.
//
// Every refusal is an *Error whose Reason and Detail say which check failed.
// ctx bounds the wait for a JWKS refetch.
func (v *Verifier) Verify(ctx context.Context, token, room string) (Claims, error) {
	if len(token) > MaxTokenLen {
		return Claims{}, refuse(ReasonMalformed, "the token is %d bytes long, more than %d", len(token), MaxTokenLen)
	}
	if strings.Count(token, ".") != 2 {
		return Claims{}, refuse(ReasonMalformed, "the token is not a JWT (a JWT has three dot-separated parts)")
	}
	valid := v.validMethods()
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(valid),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.cfg.Now),
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	var wc wireClaims
	var kid string
	tok, err := jwt.NewParser(opts...).ParseWithClaims(token, &wc, func(t *jwt.Token) (any, error) {
		return v.keyfunc(ctx, t, &kid)
	})
	if err != nil {
		return Claims{}, v.explain(err, tok, &wc, valid, kid)
	}
	out, err := wc.appClaims(room)
	if err != nil {
		return Claims{}, err
	}
	exp, _ := wc.GetExpirationTime()
	out.ExpiresAt = exp.Time
	if nbf, _ := wc.GetNotBefore(); nbf != nil {
		out.NotBefore = nbf.Time
	}
	out.Issuer, _ = wc.GetIssuer()
	out.KeyID = kid
	return out, nil
}

// keyfunc chooses the keys for t and pins the algorithm: it returns only keys
// whose algorithms include the token's alg.
func (v *Verifier) keyfunc(ctx context.Context, t *jwt.Token, kidOut *string) (any, error) {
	alg := t.Method.Alg()
	var kid string
	if raw, ok := t.Header["kid"]; ok && raw != nil {
		s, ok := raw.(string)
		if !ok {
			return nil, refuse(ReasonMalformed, "the token header's kid is not a string")
		}
		kid = s
	}
	*kidOut = kid
	keys, found := v.keysFor(kid)
	fits := func(k *key) bool { return k.allows(alg) }
	if kid != "" && !found && v.cfg.JWKSURL != "" && !slices.ContainsFunc(keys, fits) {
		// A kid the JWKS lacks, and no key without a kid could verify the
		// token instead: perhaps the JWKS has a new key.
		v.refetchForKid(ctx)
		keys, found = v.keysFor(kid)
		if !found && !slices.ContainsFunc(keys, fits) {
			return nil, refuse(ReasonUnknownKey, "no key has the kid %s named by the token", quote(kid))
		}
	}
	var fit []jwt.VerificationKey
	var allowed []string
	for _, k := range keys {
		if k.allows(alg) {
			fit = append(fit, k.pub)
		}
		allowed = append(allowed, k.algs...)
	}
	if len(fit) == 0 {
		slices.Sort(allowed)
		allowed = slices.Compact(allowed)
		if found {
			return nil, refuse(ReasonAlgorithm, "the token is signed with %s, but its key %s allows only %s", alg, quote(kid), strings.Join(allowed, ", "))
		}
		return nil, refuse(ReasonAlgorithm, "the token is signed with %s, which the configured keys do not allow (they allow %s)", alg, strings.Join(allowed, ", "))
	}
	if len(fit) == 1 {
		return fit[0], nil
	}
	return jwt.VerificationKeySet{Keys: fit}, nil
}

// explain turns an error of the jwt parser into an *Error.
func (v *Verifier) explain(err error, tok *jwt.Token, wc *wireClaims, valid []string, kid string) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refuse(ReasonMalformed, "the token is malformed: %s", strings.TrimPrefix(err.Error(), jwt.ErrTokenMalformed.Error()+": "))
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// From ParseUnverified: the alg is missing or unknown (the keyfunc
		// returns *Error, handled above).
		var rawAlg any
		if tok != nil {
			rawAlg = tok.Header["alg"]
		}
		alg, ok := rawAlg.(string)
		if !ok {
			return refuse(ReasonMalformed, "the token header has no alg (or it is not a string)")
		}
		return refuse(ReasonAlgorithm, "the token's algorithm %s is not supported", quote(alg))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if tok != nil && tok.Method != nil && !slices.Contains(valid, tok.Method.Alg()) {
			alg := tok.Method.Alg()
			if alg == jwt.SigningMethodNone.Alg() {
				return refuse(ReasonAlgorithm, "the token is unsigned (alg none), which is never accepted")
			}
			return refuse(ReasonAlgorithm, "the token is signed with %s, which the configured keys do not allow (they allow %s)", alg, strings.Join(valid, ", "))
		}
		if kid != "" {
			return refuse(ReasonBadSignature, "the token's signature does not verify with the key %s", quote(kid))
		}
		return refuse(ReasonBadSignature, "the token's signature does not verify with any configured key")
	case errors.Is(err, jwt.ErrTokenExpired):
		exp, _ := wc.GetExpirationTime()
		return refuse(ReasonExpired, "the token expired at %s", exp.Time.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		nbf, _ := wc.GetNotBefore()
		return refuse(ReasonNotYetValid, "the token is not valid before %s", nbf.Time.UTC().Format(time.RFC3339))
	}
	// Missing exp, missing or wrong aud and iss: look at the claims themselves.
	if absent(wc.Exp) {
		return refuse(ReasonMissingClaim, "the token has no exp claim (an expiry time is required)")
	}
	if v.cfg.Audience != "" {
		aud, _ := wc.GetAudience()
		if len(aud) == 0 || len(aud) == 1 && aud[0] == "" {
			return refuse(ReasonAudience, "the token has no aud claim; the audience must include %s", quote(v.cfg.Audience))
		}
		if !slices.Contains(aud, v.cfg.Audience) {
			return refuse(ReasonAudience, "the token's audience %s does not include %s", quoteList(aud), quote(v.cfg.Audience))
		}
	}
	if v.cfg.Issuer != "" {
		iss, _ := wc.GetIssuer()
		if iss == "" {
			return refuse(ReasonIssuer, "the token has no iss claim; the issuer must be %s", quote(v.cfg.Issuer))
		}
		if iss != v.cfg.Issuer {
			return refuse(ReasonIssuer, "the token's issuer is %s, not %s", quote(iss), quote(v.cfg.Issuer))
		}
	}
	return refuse(ReasonMalformed, "the token is not valid: %v", err)
}

// IsJWT reports whether a bearer credential is a JWT (a join token) rather
// than an opaque token: a JWT has exactly two dots.
func IsJWT(credential string) bool { return strings.Count(credential, ".") == 2 }
