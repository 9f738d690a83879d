package cgroups

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// dbusSystemd talks to the system's systemd. Each call opens its own
// connection (the system bus, or systemd's private socket for root when no
// bus daemon runs) and closes it: a Manager has no Close, and nsnet's
// commands make a handful of calls.
type dbusSystemd struct{}

func (dbusSystemd) conn(ctx context.Context) (*sdbus.Conn, error) {
	c, err := sdbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to systemd over D-Bus: %w", err)
	}
	return c, nil
}

func (d dbusSystemd) Version(ctx context.Context) (int, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	s, err := c.GetManagerProperty("Version")
	if err != nil {
		return 0, fmt.Errorf("reading systemd's Version: %w", err)
	}
	return parseSystemdVersion(s)
}

// parseSystemdVersion reads the leading number of systemd's Version
// property as go-systemd quotes it: "252.22-1~deb12u1" or "v255-1.fc40".
func parseSystemdVersion(s string) (int, error) {
	t := strings.TrimPrefix(strings.Trim(s, `"`), "v")
	end := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(t)
	}
	v, err := strconv.Atoi(t[:end])
	if err != nil || v == 0 {
		return 0, fmt.Errorf("systemd version %s: no leading number", s)
	}
	return v, nil
}

// wait returns the result of the job whose completion ch reports.
func wait(ctx context.Context, ch <-chan string, what string) (string, error) {
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for systemd to %s: %w", what, ctx.Err())
	}
}

func (d dbusSystemd) StartTransientUnit(ctx context.Context, name string, props []sdbus.Property) (string, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// Buffered: go-systemd delivers the result while holding its job
	// lock, and must not block once we stop listening.
	ch := make(chan string, 1)
	if _, err := c.StartTransientUnitContext(ctx, name, "replace", props, ch); err != nil {
		return "", mapDBusError(err)
	}
	return wait(ctx, ch, "start "+name)
}

func (d dbusSystemd) SetUnitProperties(ctx context.Context, name string, props []sdbus.Property) error {
	c, err := d.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return mapDBusError(c.SetUnitPropertiesContext(ctx, name, true, props...))
}

func (d dbusSystemd) StopUnit(ctx context.Context, name string) (string, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	ch := make(chan string, 1)
	if _, err := c.StopUnitContext(ctx, name, "replace", ch); err != nil {
		return "", mapDBusError(err)
	}
	return wait(ctx, ch, "stop "+name)
}

// mapDBusError turns systemd's error names for a unit that exists or is
// missing into this package's errors, keeping systemd's message.
func mapDBusError(err error) error {
	var name string
	var v dbus.Error
	var p *dbus.Error
	switch {
	case errors.As(err, &v):
		name = v.Name
	case errors.As(err, &p):
		name = p.Name
	default:
		return err
	}
	switch name {
	case "org.freedesktop.systemd1.UnitExists":
		return fmt.Errorf("%w: %w", ErrExists, err)
	case "org.freedesktop.systemd1.NoSuchUnit":
		return fmt.Errorf("%w: %w", ErrUnitNotFound, err)
	}
	return err
}
