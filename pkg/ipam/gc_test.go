package ipam

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseValidAttachments(t *testing.T) {
	tests := []struct {
		name  string
		stdin string
		want  []Attachment
		known bool
		code  uint
	}{
		{
			name:  "valid-attachments",
			stdin: `{"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth1"}]}`,
			want:  []Attachment{{"a", "eth0"}, {"b", "eth1"}},
			known: true,
		},
		{
			name:  "spec-v1.1.0 key",
			stdin: `{"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`,
			want:  []Attachment{{"a", "eth0"}},
			known: true,
		},
		{
			name:  "valid-attachments wins over attachments",
			stdin: `{"cni.dev/attachments":[{"containerID":"old","ifname":"eth0"}],"cni.dev/valid-attachments":[{"containerID":"new","ifname":"eth0"}]}`,
			want:  []Attachment{{"new", "eth0"}},
			known: true,
		},
		{name: "empty list", stdin: `{"cni.dev/valid-attachments":[]}`, want: []Attachment{}, known: true},
		{name: "null", stdin: `{"cni.dev/valid-attachments":null}`, want: []Attachment{}, known: true},
		{name: "missing", stdin: `{"name":"n"}`},
		{name: "bad JSON", stdin: `{`, code: types.ErrDecodingFailure},
		{name: "wrong type", stdin: `{"cni.dev/valid-attachments":{"containerID":"a"}}`, code: types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, known, err := ParseValidAttachments([]byte(tt.stdin))
			if errCode(err) != tt.code {
				t.Fatalf("error %v, want code %d", err, tt.code)
			}
			if known != tt.known || !slices.Equal(got, tt.want) || (tt.want != nil) != (got != nil) {
				t.Errorf("got %#v known=%t, want %#v known=%t", got, known, tt.want, tt.known)
			}
		})
	}
}

func TestGC(t *testing.T) {
	// Everything a network directory may hold.
	files := map[string]string{
		"10.1.0.2":           "a\r\neth0",
		"10.1.0.3":           "b\r\neth0",
		"10.1.0.4":           "a\r\neth1",
		"fd00::2":            "a\r\neth0",
		"10.1.0.5":           "old",
		"10.1.0.6":           "gone\n",
		"10.1.0.7":           "",
		"lock":               "",
		"last_reserved_ip.0": "10.1.0.7",
		"last_reserved_ip.1": "fd00::2",
		tmpPrefix + "stale":  "c\r\neth0",
		"README":             "not a reservation",
	}
	kept := []string{"README", "last_reserved_ip.0", "last_reserved_ip.1", "lock"}
	tests := []struct {
		name  string
		valid []Attachment
		keep  []string
	}{
		{name: "attachment and legacy container listed", valid: []Attachment{{"a", "eth0"}, {"old", "eth0"}}, keep: []string{"10.1.0.2", "fd00::2", "10.1.0.5"}},
		{name: "other interface of a listed container", valid: []Attachment{{"a", "eth1"}}, keep: []string{"10.1.0.4"}},
		{name: "legacy file kept by any interface of its container", valid: []Attachment{{"gone", "net1"}}, keep: []string{"10.1.0.6"}},
		{name: "nothing valid", valid: []Attachment{}},
		{name: "nil is nothing valid too", valid: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			for name, content := range files {
				writeFile(t, filepath.Join(netDir(dataDir), name), content)
			}
			stdin := hlConf(dataDir, `"subnet":"10.1.0.0/24"`, "")
			for range 2 {
				if err := newHostLocal().GC(t.Context(), Request{Stdin: stdin}, tt.valid); err != nil {
					t.Fatal(err)
				}
			}
			want := append(slices.Clone(kept), tt.keep...)
			slices.Sort(want)
			if got := listDir(t, netDir(dataDir)); !slices.Equal(got, want) {
				t.Errorf("left %q, want %q", got, want)
			}
			for _, name := range tt.keep {
				if got := readFile(t, filepath.Join(netDir(dataDir), name)); got != files[name] {
					t.Errorf("%s rewritten to %q", name, got)
				}
			}
		})
	}
}

func TestGCOnlyThisNetwork(t *testing.T) {
	dataDir := t.TempDir()
	writeFile(t, filepath.Join(dataDir, "other", "10.1.0.2"), "x\r\neth0")
	stdin := hlConf(dataDir, `"subnet":"10.1.0.0/24"`, "")
	if err := newHostLocal().GC(t.Context(), Request{Stdin: stdin}, nil); err != nil {
		t.Fatalf("GC without a store: %v", err)
	}
	if !exists(filepath.Join(dataDir, "other", "10.1.0.2")) || exists(netDir(dataDir)) {
		t.Error("GC touched another network or created its own store")
	}
	// A network renamed since ADD: GC of the ADD-time name.
	renamed := []byte(strings.Replace(string(stdin), `"name":"net1"`, `"name":"net2"`, 1))
	if err := newHostLocal().GC(t.Context(), Request{Stdin: renamed, Network: "other"}, nil); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(dataDir, "other", "10.1.0.2")) {
		t.Error("GC with Network=other kept a stale reservation")
	}
}

func TestKeeps(t *testing.T) {
	keep := Keeps([]Attachment{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "b", IfName: "net1"}})
	for _, tt := range []struct {
		id, ifName string
		want       bool
	}{{"a", "eth0", true}, {"b", "net1", true}, {"a", "net1", false}, {"c", "eth0", false}} {
		if got := keep(tt.id, tt.ifName); got != tt.want {
			t.Errorf("keep(%s, %s) = %v, want %v", tt.id, tt.ifName, got, tt.want)
		}
	}
	if Keeps(nil)("a", "eth0") {
		t.Error("an empty valid list kept an attachment")
	}
}
