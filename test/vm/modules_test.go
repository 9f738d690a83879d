package vm

import (
	"reflect"
	"strings"
	"testing"
)

const testModulesDep = `kernel/lib/libcrc32c.ko:
kernel/net/netfilter/nfnetlink.ko:
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko
kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko kernel/net/netfilter/nf_conntrack.ko kernel/lib/libcrc32c.ko
kernel/net/llc/llc.ko:
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/crypto/crc32c_generic.ko:
kernel/drivers/net/veth.ko:
kernel/a.ko: kernel/b.ko
kernel/b.ko: kernel/a.ko
kernel/c.ko: kernel/gone.ko
`

func TestLoadOrder(t *testing.T) {
	deps, err := ParseModulesDep(strings.NewReader(testModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	builtin := map[string]bool{"crc32": true}
	for _, tc := range []struct {
		name    string
		modules []string
		want    []string
		err     string
	}{
		{name: "no dependencies", modules: []string{"veth"}, want: []string{"kernel/drivers/net/veth.ko"}},
		{name: "chain", modules: []string{"bridge"},
			want: []string{"kernel/net/llc/llc.ko", "kernel/net/802/stp.ko", "kernel/net/bridge/bridge.ko"}},
		{name: "shared dependencies once, in the given order", modules: []string{"crc32c-generic", "nft_ct", "nf_tables", "bridge"},
			want: []string{
				"kernel/crypto/crc32c_generic.ko",
				"kernel/net/netfilter/nfnetlink.ko", "kernel/lib/libcrc32c.ko", "kernel/net/netfilter/nf_tables.ko",
				"kernel/net/netfilter/nf_conntrack.ko", "kernel/net/netfilter/nft_ct.ko",
				"kernel/net/llc/llc.ko", "kernel/net/802/stp.ko", "kernel/net/bridge/bridge.ko",
			}},
		{name: "built in", modules: []string{"crc32", "veth"}, want: []string{"kernel/drivers/net/veth.ko"}},
		{name: "unknown", modules: []string{"nosuch"}, err: `"nosuch" is neither in modules.dep nor built in`},
		{name: "cycle", modules: []string{"a"}, err: "cycle: kernel/a.ko -> kernel/b.ko -> kernel/a.ko"},
		{name: "dangling dependency", modules: []string{"c"}, err: "kernel/gone.ko (needed by kernel/c.ko) is not in modules.dep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := deps.LoadOrder(tc.modules, builtin)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestParseModules(t *testing.T) {
	if _, err := ParseModulesDep(strings.NewReader("kernel/x.ko kernel/y.ko\n")); err == nil {
		t.Fatal("a line without a colon was accepted")
	}
	b, err := ParseModulesBuiltin(strings.NewReader("kernel/crypto/crypto_hash.ko\nkernel/drivers/foo-bar.ko\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"crypto_hash": true, "foo_bar": true}; !reflect.DeepEqual(b, want) {
		t.Fatalf("builtin = %v, want %v", b, want)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/net/802/stp.ko":           "stp",
		"kernel/crypto/crc32c-generic.ko": "crc32c_generic",
		"kernel/fs/ext4/ext4.ko.xz":       "ext4",
		"nf-tables":                       "nf_tables",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}
