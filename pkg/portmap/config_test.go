package portmap

import (
	"errors"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestLoadConf(t *testing.T) {
	tests := []struct {
		name  string
		conf  string
		code  uint
		check func(*testing.T, *Conf)
	}{
		{
			name: "lowercase keys and defaults",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"portmap-lite","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]}}`,
			check: func(t *testing.T, c *Conf) {
				m := c.RuntimeConfig.PortMaps[0]
				if m.Protocol != "tcp" || m.Range != 1 || c.StateDir != DefaultStateDir {
					t.Errorf("defaults not applied: %+v %+v", c, m)
				}
			},
		},
		{
			name: "CRI capitalised keys",
			conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"HostPort":53,"ContainerPort":5353,"Protocol":"UDP","HostIP":"10.0.0.1"}]}}`,
			check: func(t *testing.T, c *Conf) {
				m := c.RuntimeConfig.PortMaps[0]
				if m.HostPort != 53 || m.ContainerPort != 5353 || m.Protocol != "udp" || m.HostIP != "10.0.0.1" {
					t.Errorf("mapping = %+v", m)
				}
			},
		},
		{name: "range", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":9000,"containerPort":9000,"range":10}]}}`},
		{name: "sctp", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":9000,"containerPort":9000,"protocol":"sctp"}]}}`},
		{name: "port 0", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}`, code: types.ErrInvalidNetworkConfig},
		{name: "port too big", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}}`, code: types.ErrInvalidNetworkConfig},
		{name: "range past 65535", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":65530,"containerPort":80,"range":10}]}}`, code: types.ErrInvalidNetworkConfig},
		{name: "container port 0", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":0}]}}`, code: types.ErrInvalidNetworkConfig},
		{name: "unknown protocol", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}}`, code: types.ErrInvalidNetworkConfig},
		{name: "bad hostIP", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"300.1.1.1"}]}}`, code: types.ErrInvalidNetworkConfig},
		{name: "IPv6 loopback hostIP", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"::1"}]}}`, code: types.ErrInvalidNetworkConfig},
		{name: "bad backend", conf: `{"cniVersion":"1.0.0","name":"n","backend":"pf"}`, code: types.ErrInvalidNetworkConfig},
		{name: "no name", conf: `{"cniVersion":"1.0.0"}`, code: types.ErrInvalidNetworkConfig},
		{name: "bad json", conf: `{`, code: types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadConf([]byte(tt.conf))
			if err == nil {
				err = c.checkMappings()
			}
			if tt.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tt.code {
				t.Fatalf("err = %v, want code %d", err, tt.code)
			}
		})
	}
}

func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"udp","hostIP":"::1","range":3}]}}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","prevResult":{"ips":[{"version":"4","address":"10.0.0.2/24"}]}}`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := LoadConf(stdin)
		if err == nil {
			err = c.checkMappings()
		}
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		for _, m := range c.RuntimeConfig.PortMaps {
			if m.HostPort < 1 || m.HostPort+m.Range-1 > 65535 || m.ContainerPort < 1 || m.Range < 1 {
				t.Fatalf("accepted bad mapping %+v", m)
			}
		}
	})
}

func cidr(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func TestContainerIPsAndExpand(t *testing.T) {
	prev := &current.Result{
		Interfaces: []*current.Interface{{Name: "cni0"}, {Name: "veth1"}, {Name: "eth0", Sandbox: "/run/netns/x"}, {Name: "eth1", Sandbox: "/run/netns/x"}},
		IPs: []*current.IPConfig{
			{Interface: current.Int(3), Address: cidr("10.9.0.9/24")},
			{Interface: current.Int(2), Address: cidr("10.1.0.5/24")},
			{Interface: current.Int(2), Address: cidr("fd00::5/64")},
			{Interface: current.Int(2), Address: cidr("10.1.0.6/24")},
		},
	}
	ips := containerIPs(prev, "eth0")
	if len(ips) != 2 || ips[0].IP.String() != "10.1.0.5" || ips[0].Subnet.String() != "10.1.0.0/24" || ips[1].IP.String() != "fd00::5" {
		t.Fatalf("containerIPs = %+v", ips)
	}
	ms := expand([]Mapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp", Range: 1},
		{HostPort: 53, ContainerPort: 53, Protocol: "udp", HostIP: "10.0.0.1", Range: 1},
		{HostPort: 9000, ContainerPort: 7000, Protocol: "tcp", HostIP: "0.0.0.0", Range: 3},
	}, ips)
	// 8080 for both families, 53 only IPv4 (hostIP family), 9000-9002 for both (0.0.0.0 means any).
	if len(ms) != 2+1+6 {
		t.Fatalf("expanded to %d mappings: %+v", len(ms), ms)
	}
	if ms[2].HostIP.String() != "10.0.0.1" || ms[2].ContainerIP.String() != "10.1.0.5" {
		t.Errorf("hostIP mapping = %+v", ms[2])
	}
	last := ms[len(ms)-1]
	if last.HostPort != 9002 || last.ContainerPort != 7002 || last.HostIP != nil || last.ContainerIP.String() != "fd00::5" {
		t.Errorf("range mapping = %+v", last)
	}
	rec := &record{Mappings: toRecord(ms)}
	back, err := rec.natMappings()
	if err != nil || len(back) != len(ms) || !back[2].HostIP.Equal(ms[2].HostIP) || back[0].ContainerSubnet.String() != "10.1.0.0/24" {
		t.Fatalf("record round trip: %v %+v", err, back)
	}
}

func TestDelIgnoresBadMappings(t *testing.T) {
	c, err := LoadConf([]byte(`{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}`))
	if err != nil {
		t.Fatalf("LoadConf refused mappings that only ADD uses: %v", err)
	}
	if err := c.checkMappings(); err == nil {
		t.Fatal("checkMappings accepted hostPort 0")
	}
}
