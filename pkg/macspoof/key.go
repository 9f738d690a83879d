package macspoof

import (
	"bytes"
	"fmt"
	"net"
	"strings"
)

// ifnameLen is the kernel's IFNAMSIZ: meta iifname loads the name
// NUL-padded to this many bytes, so set keys must be padded the same way.
const ifnameLen = 16

// macLen is an Ethernet address; the lookup key pads it to macSlot because
// concatenated keys are laid out in whole 32-bit registers.
const (
	macLen  = 6
	macSlot = 8
)

// allowedKeyLen is the size of an ifname . ether_addr key.
const allowedKeyLen = ifnameLen + macSlot

func validName(name string) error {
	if name == "" || len(name) >= ifnameLen || strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("invalid interface name %q: need 1 to %d bytes without NUL", name, ifnameLen-1)
	}
	return nil
}

func validMAC(mac net.HardwareAddr) error {
	if len(mac) != macLen {
		return fmt.Errorf("invalid MAC %q: need a %d-byte Ethernet address", mac, macLen)
	}
	return nil
}

// ifnameKey encodes an element of the ports set.
func ifnameKey(name string) []byte {
	k := make([]byte, ifnameLen)
	copy(k, name)
	return k
}

// allowedKey encodes an element of the allowed set.
func allowedKey(name string, mac net.HardwareAddr) []byte {
	k := make([]byte, allowedKeyLen)
	copy(k, name)
	copy(k[ifnameLen:], mac)
	return k
}

func parseIfname(b []byte) (string, error) {
	if len(b) != ifnameLen {
		return "", fmt.Errorf("interface name key has %d bytes, want %d", len(b), ifnameLen)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b), nil
}

func parseAllowed(k []byte) (string, net.HardwareAddr, error) {
	if len(k) != allowedKeyLen {
		return "", nil, fmt.Errorf("allowed-set key has %d bytes, want %d", len(k), allowedKeyLen)
	}
	name, err := parseIfname(k[:ifnameLen])
	if err != nil {
		return "", nil, err
	}
	mac := make(net.HardwareAddr, macLen)
	copy(mac, k[ifnameLen:])
	return name, mac, nil
}
