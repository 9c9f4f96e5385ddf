package loadtest

import (
	"encoding/json"
	"math"
	"slices"
	"time"
)

// Summary describes a distribution of durations: its count and the usual
// percentiles. Percentiles use the nearest-rank method on the sorted samples,
// so every reported value is one that was actually observed.
type Summary struct {
	Count int
	Min   time.Duration
	Mean  time.Duration
	P50   time.Duration
	P90   time.Duration
	P95   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// Summarize returns the Summary of samples. It sorts samples in place; an
// empty slice gives the zero Summary. Sorting is fine for the at most a few
// million samples a run records.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	var sum float64
	for _, d := range samples {
		sum += float64(d)
	}
	return Summary{
		Count: len(samples),
		Min:   samples[0],
		Mean:  time.Duration(sum / float64(len(samples))),
		P50:   Percentile(samples, 50),
		P90:   Percentile(samples, 90),
		P95:   Percentile(samples, 95),
		P99:   Percentile(samples, 99),
		Max:   samples[len(samples)-1],
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted samples by
// the nearest-rank method: the smallest sample such that at least p percent of
// the samples are at or below it. p <= 0 gives the minimum, p >= 100 the
// maximum, and an empty slice gives 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	// Guard against floating-point error pushing rank just outside [1, n].
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Ordered reports whether the percentiles of s are consistent:
// Min <= P50 <= P90 <= P95 <= P99 <= Max and Min <= Mean <= Max.
func (s Summary) Ordered() bool {
	return s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P95 && s.P95 <= s.P99 &&
		s.P99 <= s.Max && s.Min <= s.Mean && s.Mean <= s.Max
}

// MarshalJSON writes the durations in microseconds, as floats, so that the
// JSON report reads like the table.
func (s Summary) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Count  int     `json:"count"`
		MinUS  float64 `json:"min_us"`
		MeanUS float64 `json:"mean_us"`
		P50US  float64 `json:"p50_us"`
		P90US  float64 `json:"p90_us"`
		P95US  float64 `json:"p95_us"`
		P99US  float64 `json:"p99_us"`
		MaxUS  float64 `json:"max_us"`
	}{s.Count, us(s.Min), us(s.Mean), us(s.P50), us(s.P90), us(s.P95), us(s.P99), us(s.Max)})
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
