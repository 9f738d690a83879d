package cgroups

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"1024", 1024, false}, {"512m", 512 << 20, false}, {"1g", 1 << 30, false}, {"1G", 1 << 30, false},
		{"1024k", 1 << 20, false}, {"10b", 10, false}, {"2MiB", 2 << 20, false}, {"1.5g", 3 << 29, false},
		{" 64mb ", 64 << 20, false}, {"1t", 1 << 40, false},
		{"", 0, true}, {"m", 0, true}, {"-1m", 0, true}, {"12x", 0, true}, {"1.2.3m", 0, true},
		{"9223372036854775807k", 0, true}, {"1e3", 0, true}, {"99999999999999999999", 0, true},
	} {
		got, err := ParseBytes(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"512m", "1g", "1.5k", "0", "-1", "1e9", "18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseBytes(%q) = %d, negative", s, n)
		}
		if back, err := ParseBytes(strconv.FormatInt(n, 10)); err != nil || back != n {
			t.Fatalf("round trip of %d: %d, %v", n, back, err)
		}
	})
}

func TestValidate(t *testing.T) {
	h := Host{NumCPU: 2, CPUs: "0-1", Mems: "0"}
	for _, tc := range []struct {
		name string
		r    Resources
		want string // substring of the error; empty = valid
	}{
		{"empty", Resources{}, ""},
		{"all set", Resources{Memory: 64 << 20, MemorySwap: 128 << 20, CPUs: 1.5, CPUShares: 512, CpusetCpus: "0-1", CpusetMems: "0",
			PidsLimit: 20, BlkioWeight: 300, DeviceReadBps: []DeviceRate{{8, 0, 1 << 20}}}, ""},
		{"unlimited", Resources{Memory: Unlimited, MemorySwap: Unlimited, CPUs: Unlimited, PidsLimit: Unlimited}, ""},
		{"negative memory", Resources{Memory: -5}, "memory -5 is negative"},
		{"tiny memory", Resources{Memory: 1024}, "6 MiB"},
		{"swap below memory", Resources{Memory: 64 << 20, MemorySwap: 32 << 20}, "below memory"},
		{"swap without memory", Resources{MemorySwap: 64 << 20}, "needs a memory limit"},
		{"cpus beyond host", Resources{CPUs: 2.5}, "more than the 2 CPUs"},
		{"negative cpus", Resources{CPUs: -0.5}, "not a positive number"},
		{"tiny cpus", Resources{CPUs: 0.001}, "minimum"},
		{"shares low", Resources{CPUShares: 1}, "outside 2..262144"},
		{"shares high", Resources{CPUShares: 262145}, "outside 2..262144"},
		{"unknown cpu", Resources{CpusetCpus: "0,3"}, "CPU [3] not on this machine"},
		{"bad cpuset syntax", Resources{CpusetCpus: "1-"}, "cpuset-cpus"},
		{"reversed range", Resources{CpusetCpus: "1-0"}, "bad range"},
		{"unknown node", Resources{CpusetMems: "1"}, "memory node [1]"},
		{"negative pids", Resources{PidsLimit: -2}, "pids-limit"},
		{"blkio low", Resources{BlkioWeight: 5}, "10..1000"},
		{"blkio high", Resources{BlkioWeight: 1001}, "10..1000"},
		{"zero rate", Resources{DeviceWriteBps: []DeviceRate{{8, 0, 0}}}, "zero"},
		{"device twice", Resources{DeviceReadBps: []DeviceRate{{8, 0, 1}, {8, 0, 2}}}, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidate(t, tc.r.Validate(h), tc.want)
		})
	}
}

// checkValidate fails the test unless err is nil for an empty want, or an
// ErrInvalid containing want.
func checkValidate(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid containing %q", err, want)
	}
}

func TestValidateHostFromNumCPU(t *testing.T) {
	if err := (Resources{CpusetCpus: "3", CPUs: 4}).Validate(Host{NumCPU: 4}); err != nil {
		t.Fatal(err)
	}
	if err := (Resources{CPUs: 1}).Validate(Host{}); err == nil {
		t.Fatal("no error for an unknown host")
	}
}

func TestConversions(t *testing.T) {
	for shares, want := range map[uint64]uint64{2: 1, 1024: 100, 262144: 10000} {
		if got := sharesToWeight(shares); got != want {
			t.Errorf("sharesToWeight(%d) = %d, want %d", shares, got, want)
		}
	}
	for w, want := range map[uint16]uint64{10: 1, 1000: 10000, 500: 4950} {
		if got := blkioToIOWeight(w); got != want {
			t.Errorf("blkioToIOWeight(%d) = %d, want %d", w, got, want)
		}
	}
}
