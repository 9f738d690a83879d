// Package cniutil holds the small pieces every nsnet CNI plugin needs
// around skel: turning Go errors into CNI error results with the spec's
// codes.
package cniutil

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// ConfigError marks a configuration as invalid (CNI code 7).
func ConfigError(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// Error gives err the CNI error code of the most specific cause that has
// one, keeping the full wrapped message; causes matching one of transient
// get code 11 (try again later). skel only recognises a bare *types.Error,
// so without this every wrapped error would become code 999.
func Error(err error, transient ...error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		if te == err {
			return te
		}
		return types.NewError(te.Code, err.Error(), "")
	}
	for _, t := range transient {
		if errors.Is(err, t) {
			return types.NewError(types.ErrTryAgainLater, err.Error(), "")
		}
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
