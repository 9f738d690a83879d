package bridgelite

import (
	"github.com/nsnet/nsnet/pkg/bridge"
	"github.com/nsnet/nsnet/pkg/cniutil"
	"github.com/nsnet/nsnet/pkg/state"
)

// cniError converts err for skel; lock timeouts and a port that is not
// forwarding yet are transient.
func cniError(err error) error {
	return cniutil.Error(err, state.ErrLockTimeout, bridge.ErrNotForwarding)
}
