package ipam

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// fakeIPAMEnv, when set, turns the test binary into an IPAM plugin that
// appends each call to the file the variable names.
const fakeIPAMEnv = "NSNET_TEST_FAKE_IPAM_LOG"

type fakeCall struct {
	Cmd, ContainerID, IfName, NetNS, Args string
	Stdin                                 map[string]any
}

func fakeIPAM() int {
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		return 1
	}
	call := fakeCall{
		Cmd: os.Getenv("CNI_COMMAND"), ContainerID: os.Getenv("CNI_CONTAINERID"),
		IfName: os.Getenv("CNI_IFNAME"), NetNS: os.Getenv("CNI_NETNS"), Args: os.Getenv("CNI_ARGS"),
	}
	if err := json.Unmarshal(stdin, &call.Stdin); err != nil {
		return 1
	}
	line, _ := json.Marshal(call)
	f, err := os.OpenFile(os.Getenv(fakeIPAMEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 1
	}
	fmt.Fprintf(f, "%s\n", line)
	f.Close()

	v, _ := call.Stdin["cniVersion"].(string)
	switch {
	case call.Cmd == "ADD" && v == "0.4.0":
		fmt.Printf(`{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.9.0.5/24","gateway":"10.9.0.1","interface":0}]}`)
	case call.Cmd == "ADD":
		fmt.Printf(`{"cniVersion":%q,"ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1","interface":0}],"dns":{"nameservers":["10.9.0.53"]}}`, v)
	case call.Cmd == "STATUS" && call.Stdin["failStatus"] == true:
		fmt.Printf(`{"cniVersion":%q,"code":50,"msg":"pool empty"}`, v)
		return 1
	}
	return 0
}

// withFakeIPAM puts the fake plugin on CNI_PATH as "fake-ipam" and returns
// a function reading its calls so far.
func withFakeIPAM(t *testing.T) func() []fakeCall {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	if err := os.Symlink(exe, filepath.Join(binDir, "fake-ipam")); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "calls")
	t.Setenv("CNI_PATH", binDir)
	t.Setenv(fakeIPAMEnv, log)
	return func() []fakeCall {
		f, err := os.Open(log)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var calls []fakeCall
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var c fakeCall
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				t.Fatal(err)
			}
			calls = append(calls, c)
		}
		return calls
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		stdin string
		want  string // driver type, or "" for an error
		code  uint
	}{
		{stdin: `{"ipam":{"type":"host-local"}}`, want: "*ipam.hostLocal"},
		{stdin: `{"ipam":{"type":"dhcp"}}`, want: "*ipam.execDriver"},
		{stdin: `{"name":"n"}`, code: types.ErrInvalidNetworkConfig},
		{stdin: `{"ipam":{}}`, code: types.ErrInvalidNetworkConfig},
		{stdin: `{"ipam":{"type":"../bin/sh"}}`, code: types.ErrInvalidNetworkConfig},
		{stdin: `{"ipam":`, code: types.ErrDecodingFailure},
		{stdin: `{"ipam":{"type":7}}`, code: types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		d, err := Load([]byte(tt.stdin))
		if got := fmt.Sprintf("%T", d); tt.want != "" && got != tt.want {
			t.Errorf("%s: driver %s, want %s (%v)", tt.stdin, got, tt.want, err)
		}
		if errCode(err) != tt.code {
			t.Errorf("%s: error %v, want code %d", tt.stdin, err, tt.code)
		}
	}
}

func TestDelegate(t *testing.T) {
	calls := withFakeIPAM(t)
	stdin := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"bridge-lite","ipam":{"type":"fake-ipam","pool":"p"},"cni.dev/valid-attachments":[]}`)
	d, err := Load(stdin)
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Stdin: stdin, Attachment: Attachment{ContainerID: "c1", IfName: "eth1"}, Args: "IP=10.9.0.5", NetNS: "/run/netns/x"}

	res, err := d.Add(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if res.CNIVersion != "1.1.0" || strings.Join(addrs(res), ",") != "10.9.0.5/24" || res.IPs[0].Interface != nil || res.IPs[0].Gateway.String() != "10.9.0.1" {
		t.Errorf("result %+v", res)
	}
	renamed := r
	renamed.Network = "old-name"
	if err := d.Del(t.Context(), renamed, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(t.Context(), r, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.GC(t.Context(), Request{Stdin: stdin}, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Status(t.Context(), Request{Stdin: stdin}); err != nil {
		t.Fatal(err)
	}

	got := calls()
	wantCmds := []string{"ADD", "DEL", "CHECK", "GC", "STATUS"}
	if len(got) != len(wantCmds) {
		t.Fatalf("calls %+v", got)
	}
	for i, c := range got {
		if c.Cmd != wantCmds[i] {
			t.Errorf("call %d is %s, want %s", i, c.Cmd, wantCmds[i])
		}
		wantName := "net1"
		if c.Cmd == "DEL" {
			wantName = "old-name"
		}
		if c.Stdin["name"] != wantName || c.Stdin["ipam"].(map[string]any)["pool"] != "p" || c.Stdin["type"] != "bridge-lite" {
			t.Errorf("%s got stdin %v", c.Cmd, c.Stdin)
		}
	}
	if a := got[0]; a.ContainerID != "c1" || a.IfName != "eth1" || a.NetNS != "/run/netns/x" || a.Args != "IP=10.9.0.5" {
		t.Errorf("ADD environment %+v", a)
	}
}

func TestDelegateConversionAndErrors(t *testing.T) {
	withFakeIPAM(t)
	old := []byte(`{"cniVersion":"0.4.0","name":"net1","ipam":{"type":"fake-ipam"}}`)
	d, err := Load(old)
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Add(t.Context(), Request{Stdin: old, Attachment: Attachment{ContainerID: "c", IfName: "eth0"}, NetNS: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	if res.CNIVersion != "1.1.0" || strings.Join(addrs(res), ",") != "10.9.0.5/24" || res.IPs[0].Interface != nil {
		t.Errorf("converted result %+v", res)
	}

	failing := []byte(`{"cniVersion":"1.1.0","name":"net1","failStatus":true,"ipam":{"type":"fake-ipam"}}`)
	err = d.Status(t.Context(), Request{Stdin: failing})
	if errCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "pool empty") {
		t.Errorf("Status: %v (code %d)", err, errCode(err))
	}

	missing, err := Load([]byte(`{"ipam":{"type":"no-such-ipam"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := missing.Add(t.Context(), Request{Stdin: old}); err == nil || !strings.Contains(err.Error(), "no-such-ipam") {
		t.Errorf("missing plugin: %v", err)
	}
}

func TestWithNetworkName(t *testing.T) {
	in := []byte(`{"name":"new","ipam":{"type":"x"},"z":[1,2]}`)
	tests := []struct {
		network string
		want    string
	}{
		{"", string(in)},
		{"new", string(in)},
		{"old", `{"ipam":{"type":"x"},"name":"old","z":[1,2]}`},
	}
	for _, tt := range tests {
		got, err := withNetworkName(in, tt.network)
		if err != nil || string(got) != tt.want {
			t.Errorf("%q: %s, %v; want %s", tt.network, got, err, tt.want)
		}
	}
	if _, err := withNetworkName([]byte(`null`), "x"); errCode(err) != types.ErrDecodingFailure {
		t.Errorf("null config: %v", err)
	}
}
