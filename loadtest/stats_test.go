package loadtest

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentileNearestRank(t *testing.T) {
	// 1..100 ms: the p-th percentile by nearest rank is exactly p ms.
	var xs []time.Duration
	for i := 100; i >= 1; i-- {
		xs = append(xs, ms(i))
	}
	s := Summarize(xs)
	want := Summary{Count: 100, Min: ms(1), Mean: 50*time.Millisecond + 500*time.Microsecond,
		P50: ms(50), P90: ms(90), P95: ms(95), P99: ms(99), Max: ms(100)}
	if s != want {
		t.Fatalf("Summarize(1..100ms) = %+v, want %+v", s, want)
	}
	for _, tc := range []struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{ms(7)}, 1, ms(7)},
		{[]time.Duration{ms(7)}, 99, ms(7)},
		{[]time.Duration{ms(1), ms(2)}, 50, ms(1)},
		{[]time.Duration{ms(1), ms(2)}, 50.1, ms(2)},
		{[]time.Duration{ms(1), ms(2), ms(3), ms(4)}, 75, ms(3)},
		{[]time.Duration{ms(1), ms(2), ms(3), ms(4)}, 76, ms(4)},
		{[]time.Duration{ms(1), ms(2), ms(3)}, 0, ms(1)},
		{[]time.Duration{ms(1), ms(2), ms(3)}, -5, ms(1)},
		{[]time.Duration{ms(1), ms(2), ms(3)}, 100, ms(3)},
		{[]time.Duration{ms(1), ms(2), ms(3)}, 250, ms(3)},
		// 10 samples: p99 is the 10th (ceil(9.9)), p90 the 9th.
		{[]time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
		{[]time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90, 9},
	} {
		if got := Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
		}
	}
}

func TestSummarizeEmptyAndOrdered(t *testing.T) {
	if s := Summarize(nil); s != (Summary{}) {
		t.Fatalf("Summarize(nil) = %+v, want zero", s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	xs := make([]time.Duration, 100_000)
	for i := range xs {
		xs[i] = time.Duration(r.ExpFloat64() * float64(time.Millisecond))
	}
	s := Summarize(xs)
	if s.Count != len(xs) || !s.Ordered() {
		t.Fatalf("summary of exponential samples not ordered: %+v", s)
	}
	// Median of Exp(1 ms) is ln 2 ms; with 1e5 samples it is well within 5%.
	if med := float64(s.P50) / float64(time.Millisecond); med < 0.66 || med > 0.73 {
		t.Fatalf("median of Exp(1ms) = %v, want about 0.693ms", s.P50)
	}
	if (Summary{Min: 2, P50: 1, Max: 3, Mean: 2}).Ordered() {
		t.Fatal("Ordered accepted min > p50")
	}
}

func TestSummaryJSONInMicroseconds(t *testing.T) {
	b, err := json.Marshal(Summarize([]time.Duration{1500 * time.Microsecond, 500 * time.Microsecond}))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["count"] != 2 || got["min_us"] != 500 || got["max_us"] != 1500 || got["mean_us"] != 1000 || got["p50_us"] != 500 {
		t.Fatalf("JSON summary = %s", b)
	}
}
