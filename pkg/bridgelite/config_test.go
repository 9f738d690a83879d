package bridgelite

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestLoadConf(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		envArgs string
		code    uint // 0: success
		check   func(*testing.T, *Conf)
	}{
		{
			name: "defaults",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"bridge-lite"}`,
			check: func(t *testing.T, c *Conf) {
				if c.Bridge != "cni0" || c.StateDir != DefaultStateDir || c.IsGateway || c.mac != nil {
					t.Errorf("defaults wrong: %+v", c)
				}
			},
		},
		{
			name: "isDefaultGateway implies isGateway",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"bridge-lite","isDefaultGateway":true}`,
			check: func(t *testing.T, c *Conf) {
				if !c.IsGateway {
					t.Error("isGateway not implied")
				}
			},
		},
		{
			name:    "mac precedence: runtimeConfig wins",
			conf:    `{"cniVersion":"1.0.0","name":"n","type":"bridge-lite","runtimeConfig":{"mac":"02:00:00:00:00:01"},"args":{"cni":{"mac":"02:00:00:00:00:02"}}}`,
			envArgs: "IgnoreUnknown=1;MAC=02:00:00:00:00:03",
			check: func(t *testing.T, c *Conf) {
				if c.mac.String() != "02:00:00:00:00:01" {
					t.Errorf("mac = %s", c.mac)
				}
			},
		},
		{
			name:    "mac precedence: args before CNI_ARGS",
			conf:    `{"cniVersion":"1.0.0","name":"n","type":"bridge-lite","args":{"cni":{"mac":"02:00:00:00:00:02"}}}`,
			envArgs: "MAC=02:00:00:00:00:03",
			check: func(t *testing.T, c *Conf) {
				if c.mac.String() != "02:00:00:00:00:02" {
					t.Errorf("mac = %s", c.mac)
				}
			},
		},
		{
			name:    "mac from CNI_ARGS, unknown keys ignored",
			conf:    `{"cniVersion":"1.0.0","name":"n","type":"bridge-lite"}`,
			envArgs: "K8S_POD_NAME=x;MAC=02:00:00:00:00:03",
			check: func(t *testing.T, c *Conf) {
				if c.mac.String() != "02:00:00:00:00:03" {
					t.Errorf("mac = %s", c.mac)
				}
			},
		},
		{
			name: "perNetnsResolvConf defaults to true, netnsConfDir to /etc/netns",
			conf: `{"cniVersion":"1.0.0","name":"n"}`,
			check: func(t *testing.T, c *Conf) {
				if c.resolvConf != resolvConfKnown || c.NetnsConfDir != "/etc/netns" {
					t.Errorf("resolvConf = %v, netnsConfDir = %q", c.resolvConf, c.NetnsConfDir)
				}
			},
		},
		{
			name:  "perNetnsResolvConf true",
			conf:  `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":true}`,
			check: wantResolvConf(resolvConfKnown),
		},
		{
			name:  "perNetnsResolvConf null is the default",
			conf:  `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":null}`,
			check: wantResolvConf(resolvConfKnown),
		},
		{
			name:  "perNetnsResolvConf false",
			conf:  `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":false}`,
			check: wantResolvConf(resolvConfOff),
		},
		{
			name:  "perNetnsResolvConf host, netnsConfDir set",
			conf:  `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":"host","netnsConfDir":"/tmp/x/netns"}`,
			check: wantResolvConf(resolvConfHost),
		},
		{name: "perNetnsResolvConf other string", conf: `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":"yes"}`, code: types.ErrInvalidNetworkConfig},
		{name: "perNetnsResolvConf string true", conf: `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":"true"}`, code: types.ErrInvalidNetworkConfig},
		{name: "perNetnsResolvConf number", conf: `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":1}`, code: types.ErrInvalidNetworkConfig},
		{name: "perNetnsResolvConf object", conf: `{"cniVersion":"1.0.0","name":"n","perNetnsResolvConf":{"mode":"host"}}`, code: types.ErrInvalidNetworkConfig},
		{name: "relative netnsConfDir", conf: `{"cniVersion":"1.0.0","name":"n","netnsConfDir":"netns"}`, code: types.ErrInvalidNetworkConfig},
		{name: "empty netnsConfDir", conf: `{"cniVersion":"1.0.0","name":"n","netnsConfDir":""}`, code: types.ErrInvalidNetworkConfig},
		{name: "vlanTrunk unsupported", conf: `{"cniVersion":"1.0.0","name":"n","vlanTrunk":[{"id":5}]}`, code: types.ErrUnsupportedField},
		{name: "bad json", conf: `{"name":`, code: types.ErrDecodingFailure},
		{name: "wrong type of field", conf: `{"cniVersion":"1.0.0","name":"n","mtu":"big"}`, code: types.ErrDecodingFailure},
		{name: "no name", conf: `{"cniVersion":"1.0.0","type":"bridge-lite"}`, code: types.ErrInvalidNetworkConfig},
		{name: "bridge name too long", conf: `{"cniVersion":"1.0.0","name":"n","bridge":"abcdefghijklmnop"}`, code: types.ErrInvalidNetworkConfig},
		{name: "bridge name with slash", conf: `{"cniVersion":"1.0.0","name":"n","bridge":"a/b"}`, code: types.ErrInvalidNetworkConfig},
		{name: "mtu too small", conf: `{"cniVersion":"1.0.0","name":"n","mtu":10}`, code: types.ErrInvalidNetworkConfig},
		{name: "mtu too big", conf: `{"cniVersion":"1.0.0","name":"n","mtu":70000}`, code: types.ErrInvalidNetworkConfig},
		{name: "vlan out of range", conf: `{"cniVersion":"1.0.0","name":"n","vlan":4095}`, code: types.ErrInvalidNetworkConfig},
		{name: "hairpin and promisc", conf: `{"cniVersion":"1.0.0","name":"n","hairpinMode":true,"promiscMode":true}`, code: types.ErrInvalidNetworkConfig},
		{name: "unknown masq backend", conf: `{"cniVersion":"1.0.0","name":"n","ipMasqBackend":"pf"}`, code: types.ErrInvalidNetworkConfig},
		{name: "relative stateDir", conf: `{"cniVersion":"1.0.0","name":"n","stateDir":"x"}`, code: types.ErrInvalidNetworkConfig},
		{name: "bad mac", conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"mac":"zz"}}`, code: types.ErrInvalidNetworkConfig},
		{name: "multicast mac", conf: `{"cniVersion":"1.0.0","name":"n","args":{"cni":{"mac":"01:00:5e:00:00:01"}}}`, code: types.ErrInvalidNetworkConfig},
		{name: "malformed CNI_ARGS", conf: `{"cniVersion":"1.0.0","name":"n"}`, envArgs: "MAC", code: types.ErrInvalidEnvironmentVariables},
		{name: "bad prevResult", conf: `{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}`, code: types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadConf([]byte(tt.conf), tt.envArgs)
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("err = %v, want a CNI error with code %d", err, tt.code)
			}
			if te.Code != tt.code {
				t.Fatalf("code = %d (%s), want %d", te.Code, te.Msg, tt.code)
			}
		})
	}
}

func wantResolvConf(m resolvConfMode) func(*testing.T, *Conf) {
	return func(t *testing.T, c *Conf) {
		if c.resolvConf != m {
			t.Errorf("resolvConf = %v, want %v", c.resolvConf, m)
		}
	}
}

func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge-lite","bridge":"br0","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`), "MAC=02:00:00:00:00:01")
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24"}]}}`), "")
	f.Add([]byte(`{}`), "a=b;c")
	f.Fuzz(func(t *testing.T, stdin []byte, envArgs string) {
		c, err := LoadConf(stdin, envArgs)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		if c.Name == "" || c.Bridge == "" || c.StateDir == "" {
			t.Fatalf("accepted config lacks required fields: %+v", c)
		}
		if c.IsDefaultGateway && !c.IsGateway {
			t.Fatal("isDefaultGateway without isGateway")
		}
	})
}
