package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePackages(t *testing.T) {
	base := []string{"-test.v", "-test.count=1", "-test.timeout=1m0s"}
	for _, tc := range []struct {
		name  string
		specs []string
		run   string
		want  []testPackage
		err   string
	}{
		{name: "plain and with flags", specs: []string{"./isolation/cgroups", "./test -test.run ^TestRun|Cgroup -test.skip ^TestRunNet"},
			want: []testPackage{
				{path: "./isolation/cgroups", name: "isolation_cgroups", args: base},
				{path: "./test", name: "test", args: append(base[:3:3], "-test.run", "^TestRun|Cgroup", "-test.skip", "^TestRunNet")},
			}},
		{name: "-run replaces every package's own", specs: []string{"./a -test.run X -test.short", "./b -test.run=Y", "./c"}, run: "Systemd",
			want: []testPackage{
				{path: "./a", name: "a", args: append(base[:3:3], "-test.short", "-test.run", "Systemd")},
				{path: "./b", name: "b", args: append(base[:3:3], "-test.run", "Systemd")},
				{path: "./c", name: "c", args: append(base[:3:3], "-test.run", "Systemd")},
			}},
		{name: "not relative", specs: []string{"github.com/nsnet/nsnet/test"}, err: "relative to the module root"},
		{name: "twice", specs: []string{"./test", "./test/"}, err: "listed twice"},
		{name: "empty", specs: []string{" "}, err: "empty -pkg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePackages(tc.specs, tc.run, time.Minute)
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
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
