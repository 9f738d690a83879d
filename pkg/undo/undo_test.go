package undo

import (
	"errors"
	"reflect"
	"testing"
)

func TestRollbackOrderAndErrors(t *testing.T) {
	var s Stack
	var order []int
	errB := errors.New("b failed")
	s.Push(func() error { order = append(order, 1); return nil })
	s.Push(func() error { order = append(order, 2); return errB })
	s.Push(func() error { order = append(order, 3); return nil })

	err := s.Rollback()
	if !reflect.DeepEqual(order, []int{3, 2, 1}) {
		t.Fatalf("rollback order = %v, want [3 2 1]", order)
	}
	if !errors.Is(err, errB) {
		t.Fatalf("rollback error = %v, want it to wrap %v", err, errB)
	}
	if err := s.Rollback(); err != nil || len(order) != 3 {
		t.Fatalf("second rollback ran again: err=%v order=%v", err, order)
	}
}

func TestReleaseForgets(t *testing.T) {
	var s Stack
	ran := false
	s.Push(func() error { ran = true; return nil })
	s.Release()
	if err := s.Rollback(); err != nil || ran {
		t.Fatalf("released stack still rolled back: ran=%v err=%v", ran, err)
	}
}
