package bridgelite

import (
	"fmt"
	"net"

	"github.com/nsnet/nsnet/pkg/macspoof"
	"github.com/nsnet/nsnet/pkg/undo"
)

func setupMacSpoofChk(u *undo.Stack, hostVeth string, mac net.HardwareAddr) error {
	if err := macspoof.Add(hostVeth, mac); err != nil {
		return fmt.Errorf("guarding %s against MAC spoofing: %w", hostVeth, err)
	}
	u.Push(func() error { return macspoof.Del(hostVeth) })
	return nil
}

func macSpoofDel(hostVeth string) error {
	if err := macspoof.Del(hostVeth); err != nil {
		return fmt.Errorf("removing MAC spoofing guard of %s: %w", hostVeth, err)
	}
	return nil
}

func netMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("prevResult has a bad MAC %q: %w", s, err)
	}
	return mac, nil
}
