package benchstat

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tt := range []struct {
		p    int
		want time.Duration
	}{{50, 5}, {95, 10}, {10, 1}, {1, 1}, {100, 10}} {
		if got := Percentile(d, tt.p); got != tt.want {
			t.Errorf("p%d = %d, want %d", tt.p, got, tt.want)
		}
	}
	if d[0] != 5 {
		t.Error("Percentile sorted its input")
	}
	if MS(1500*time.Microsecond) != 1.5 {
		t.Errorf("MS(1.5ms) = %v", MS(1500*time.Microsecond))
	}
}
