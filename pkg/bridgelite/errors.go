package bridgelite

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/nsnet/nsnet/pkg/bridge"
	"github.com/nsnet/nsnet/pkg/state"
)

// cniError gives err the CNI error code of the most specific cause that has
// one, keeping the full wrapped message. skel only recognises a bare
// *types.Error, so without this every wrapped error would become code 999.
func cniError(err error) error {
	if err == nil {
		return nil
	}
	code := uint(types.ErrInternal)
	var te *types.Error
	switch {
	case errors.As(err, &te):
		code = te.Code
	case errors.Is(err, state.ErrLockTimeout), errors.Is(err, bridge.ErrNotForwarding):
		code = types.ErrTryAgainLater
	}
	if te != nil && te == err {
		return te
	}
	return types.NewError(code, err.Error(), "")
}
