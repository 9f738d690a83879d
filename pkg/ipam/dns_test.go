package ipam

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestReadResolvConf(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want types.DNS
	}{
		{name: "empty", in: "", want: types.DNS{}},
		{
			name: "all keys",
			in: "# generated\n; also a comment\nnameserver 10.0.0.53\nnameserver fd00::53\n" +
				"domain corp.example\nsearch a.example b.example\nsearch c.example\noptions ndots:5 edns0\noptions rotate\n",
			want: types.DNS{
				Nameservers: []string{"10.0.0.53", "fd00::53"},
				Domain:      "corp.example",
				Search:      []string{"a.example", "b.example", "c.example"},
				Options:     []string{"ndots:5", "edns0", "rotate"},
			},
		},
		{
			name: "loopback resolvers dropped",
			in:   "nameserver 127.0.0.53\nnameserver ::1\nnameserver 127.0.0.1\nnameserver 192.0.2.1\n",
			want: types.DNS{Nameservers: []string{"192.0.2.1"}},
		},
		{
			name: "whitespace and incomplete lines",
			in:   "  nameserver\t192.0.2.1  \nnameserver\nsearch\n\n   \ndomain   d.example  \n",
			want: types.DNS{Nameservers: []string{"192.0.2.1"}, Domain: "d.example"},
		},
		{name: "unknown keys ignored", in: "sortlist 10.0.0.0\nlookup file bind\n", want: types.DNS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readResolvConf(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolvConfMissing(t *testing.T) {
	dataDir := t.TempDir()
	stdin := hlConf(dataDir, `"subnet":"10.1.0.0/24","resolvConf":`+`"`+filepath.Join(dataDir, "nope")+`"`, "")
	_, err := newHostLocal().Add(t.Context(), req(stdin, "a"))
	if errCode(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "resolvConf") {
		t.Fatalf("got %v", err)
	}
	if exists(netDir(dataDir)) {
		t.Error("a failed ADD created the store")
	}
}
