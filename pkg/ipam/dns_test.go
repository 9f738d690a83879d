package ipam

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

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
