package boltstore

import (
	"context"
	"errors"

	"github.com/tincan/tincan/store"
)

// errNotYet: the apps seam is not implemented in this engine yet.
var errNotYet = errors.New("boltstore: not implemented yet")

func (s *Store) Outbox(context.Context, int) ([]store.Event, error)           { return nil, errNotYet }
func (s *Store) Delivered(context.Context, []store.Event) error               { return errNotYet }
func (s *Store) OutboxChanged(func()) func()                                  { return func() {} }
func (s *Store) Rooms(context.Context, string, int) ([]store.RoomInfo, error) { return nil, errNotYet }
func (s *Store) Room(context.Context, string) (store.RoomInfo, []store.MemberInfo, error) {
	return store.RoomInfo{}, nil, errNotYet
}
func (s *Store) Kick(context.Context, store.Member) error { return errNotYet }
func (s *Store) CloseRoom(context.Context, string) error  { return errNotYet }
func (s *Store) ClaimOutbox(context.Context) (<-chan struct{}, func(), error) {
	return nil, nil, errNotYet
}
