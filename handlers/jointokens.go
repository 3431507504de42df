package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/tincan/tincan/store"
)

// JoinTokens verifies the application's join tokens (-auth jwt). main
// gives it jwtauth's verifier; the handlers need only this.
type JoinTokens interface {
	// Verify checks token for a join of room and returns the profile it
	// grants (its Identity never empty). An error's message says what is
	// wrong with the token, for the client: it is the 401's detail.
	Verify(ctx context.Context, token, room string) (store.Profile, error)
}

// isJWT reports whether a bearer credential is a JWT: three parts
// separated by dots. A member's token has no dot.
func isJWT(credential string) bool { return strings.Count(credential, ".") == 2 }

// joinProfile is the profile a new member's join token grants: 401
// jwt_required without a token, 401 bad_jwt with one that does not admit
// the caller to room, saying why. The caller has counted the request
// against its address's rate limit; nothing here touches the store.
func (s *Server) joinProfile(r *http.Request, token, room string) (store.Profile, error) {
	switch {
	case token == "":
		return store.Profile{}, errorf(http.StatusUnauthorized, "jwt_required",
			"this server admits new members with the application's join token: send Authorization: Bearer <JWT>")
	case !isJWT(token):
		return store.Profile{}, errorf(http.StatusUnauthorized, "bad_jwt",
			"the bearer credential is neither a JWT (three dot-separated parts) nor the token of a member of room %q", room)
	}
	p, err := s.cfg.JoinTokens.Verify(r.Context(), token, room)
	if err != nil {
		s.metrics.joinTokensRefused.Inc()
		return store.Profile{}, errorf(http.StatusUnauthorized, "bad_jwt", "%s", err.Error())
	}
	return p, nil
}

// stillMember checks, after the store said that m was removed or got a new
// token, that token still authenticates m: nil, or the store's refusal
// (ErrKicked, ErrRoomClosed, ErrUnauthorized: a newer session of the same
// identity took the member's place).
func (s *Server) stillMember(ctx context.Context, m store.Member, token string) error {
	got, err := s.store.Authenticate(ctx, token)
	if err == nil && got != m {
		err = store.ErrUnauthorized
	}
	return err
}

// farewellOf is the last frame or message of a member that the application
// removed, for err of a read or an authentication: {"type":"kicked"} or
// {"type":"room-closed"}, with the room; nil for any other err.
func farewellOf(err error, room string) []byte {
	var typ string
	switch {
	case errors.Is(err, store.ErrKicked):
		typ = "kicked"
	case errors.Is(err, store.ErrRoomClosed):
		typ = "room-closed"
	default:
		return nil
	}
	return []byte(`{"type":"` + typ + `","room":` + strconv.Quote(room) + `}`)
}
