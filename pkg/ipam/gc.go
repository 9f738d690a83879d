package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
)

// ParseValidAttachments decodes the GC key from raw stdin:
// "cni.dev/valid-attachments", falling back to "cni.dev/attachments" (the
// spec-v1.1.0 tag's name). known is false when neither key is present, which
// must free nothing; an explicit [] or null means nothing is valid. The raw
// key is read because libcni's struct tag is omitempty and would make the
// three cases look alike.
func ParseValidAttachments(stdin []byte) (valid []Attachment, known bool, err error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, false, decodeError("network config", err)
	}
	key := "cni.dev/valid-attachments"
	v, ok := raw[key]
	if !ok {
		key = "cni.dev/attachments"
		if v, ok = raw[key]; !ok {
			return nil, false, nil
		}
	}
	var list []struct {
		ContainerID string `json:"containerID"`
		IfName      string `json:"ifname"`
	}
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, false, decodeError(key, err)
	}
	valid = make([]Attachment, 0, len(list))
	for _, a := range list {
		valid = append(valid, Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return valid, true, nil
}

// Keeps returns whether an attachment, given as container ID and interface
// name, is in valid: the predicate a plugin's GC sweeps its records with.
func Keeps(valid []Attachment) func(containerID, ifName string) bool {
	keep := make(map[Attachment]bool, len(valid))
	for _, a := range valid {
		keep[a] = true
	}
	return func(containerID, ifName string) bool {
		return keep[Attachment{ContainerID: containerID, IfName: ifName}]
	}
}

// GC keeps a reservation when its attachment is in valid; a legacy file,
// which names only a container, is kept when any valid attachment has that
// container, or the first GC after an upgrade would free every old lease.
// Only address-named files are considered, so "lock" and the
// last_reserved_ip markers survive.
func (h *hostLocal) GC(ctx context.Context, r Request, valid []Attachment) error {
	dir, err := storeDir(r)
	if err != nil {
		return err
	}
	s, err := openStore(dir, false)
	if errors.Is(err, errNoStore) {
		return nil
	}
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.lock(ctx, h.lockTimeout); err != nil {
		return err
	}

	keep := make(map[Attachment]bool, len(valid))
	keepIDs := make(map[string]bool, len(valid))
	for _, a := range valid {
		id := strings.TrimSpace(a.ContainerID)
		keep[Attachment{ContainerID: id, IfName: a.IfName}] = true
		keepIDs[id] = true
	}

	names, temps, err := s.reservations()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range temps {
		errs = append(errs, s.remove(t))
	}
	for _, name := range names {
		o, err := s.owner(name)
		switch {
		case isNotExist(err):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		case o.legacy && keepIDs[o.id], !o.legacy && keep[Attachment{ContainerID: o.id, IfName: o.ifname}]:
			continue
		}
		errs = append(errs, s.remove(name))
	}
	return errors.Join(errs...)
}
