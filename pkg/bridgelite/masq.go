package bridgelite

import (
	"errors"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/pkg/nat"
	"github.com/nsnet/nsnet/pkg/state"
	"github.com/nsnet/nsnet/pkg/undo"
)

func masqBackend(c *Conf) string {
	if c.IPMasqBackend != nil {
		return *c.IPMasqBackend
	}
	return ""
}

func masqEntries(ips []*current.IPConfig) []masqRecord {
	var out []masqRecord
	for _, ipc := range ips {
		subnet := net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		out = append(out, masqRecord{Subnet: subnet.String(), IP: ipc.Address.IP.String()})
	}
	return out
}

func natEntry(network string, m masqRecord) (nat.MasqEntry, error) {
	ip := net.ParseIP(m.IP)
	_, subnet, err := net.ParseCIDR(m.Subnet)
	if ip == nil || err != nil {
		return nat.MasqEntry{}, fmt.Errorf("corrupt masquerade entry %+v in state", m)
	}
	return nat.MasqEntry{Network: network, Subnet: subnet, IP: ip}, nil
}

// masqAdd installs the record's masquerade entries under the store lock
// (masquerade structures are shared by a network's attachments) and
// registers their removal.
func masqAdd(u *undo.Stack, st *state.Store, rec *record) error {
	m, err := nat.NewMasquerader(rec.MasqBackend)
	if err != nil {
		return err
	}
	unlock, err := st.Lock(lockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	for _, me := range rec.Masq {
		e, err := natEntry(rec.Network, me)
		if err != nil {
			return err
		}
		if err := m.Add(e); err != nil {
			return fmt.Errorf("masquerading %s: %w", e.IP, err)
		}
		u.Push(func() error {
			unlock, err := st.Lock(lockTimeout)
			if err != nil {
				return err
			}
			defer unlock()
			return m.Del(e)
		})
	}
	return nil
}

// masqDel removes the record's masquerade entries; missing ones are fine.
func masqDel(st *state.Store, rec *record) error {
	if len(rec.Masq) == 0 {
		return nil
	}
	m, err := nat.NewMasquerader(rec.MasqBackend)
	if err != nil {
		return err
	}
	unlock, err := st.Lock(lockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, me := range rec.Masq {
		e, err := natEntry(rec.Network, me)
		if err == nil {
			err = m.Del(e)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing masquerade of %s: %w", me.IP, err))
		}
	}
	return errors.Join(errs...)
}

func masqCheck(rec *record) error {
	if len(rec.Masq) == 0 {
		return nil
	}
	m, err := nat.NewMasquerader(rec.MasqBackend)
	if err != nil {
		return err
	}
	for _, me := range rec.Masq {
		e, err := natEntry(rec.Network, me)
		if err != nil {
			return err
		}
		if err := m.Check(e); err != nil {
			return fmt.Errorf("masquerade of %s: %w", e.IP, err)
		}
	}
	return nil
}
