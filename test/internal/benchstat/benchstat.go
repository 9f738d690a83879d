// Package benchstat summarises the latency samples of nsnet's benchmark
// programs.
package benchstat

import (
	"slices"
	"time"
)

// Percentile is the nearest-rank percentile p (1..100) of d.
func Percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

// MS is d in milliseconds, to the microsecond.
func MS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
