package cniutil

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestError(t *testing.T) {
	busy := errors.New("busy")
	inner := types.NewError(types.ErrInvalidNetworkConfig, "bad", "")
	tests := []struct {
		name string
		err  error
		code uint
		msg  string
	}{
		{"typed cause keeps its code", fmt.Errorf("outer: %w", inner), types.ErrInvalidNetworkConfig, "outer: bad"},
		{"joined typed cause", errors.Join(errors.New("x"), inner), types.ErrInvalidNetworkConfig, "x\nbad"},
		{"transient", fmt.Errorf("locking: %w", busy), types.ErrTryAgainLater, "locking: busy"},
		{"plain", errors.New("plain"), types.ErrInternal, "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			te, ok := Error(tt.err, busy).(*types.Error)
			if !ok || te.Code != tt.code || te.Msg != tt.msg {
				t.Fatalf("got %#v, want code %d msg %q", te, tt.code, tt.msg)
			}
		})
	}
	if Error(nil) != nil {
		t.Fatal("nil error became non-nil")
	}
	if te := Error(inner); te != error(inner) {
		t.Fatal("bare CNI error not passed through")
	}
}
