package main

import (
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	var ds []time.Duration
	for i := 10; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarise(ds)
	if s.median != 5500*time.Microsecond || s.p90 != 9*time.Millisecond {
		t.Fatalf("summarise(1..10 ms) = %+v, want median 5.5ms, p90 9ms", s)
	}
	if s := summarise([]time.Duration{3, 1, 2}); s.median != 2 || s.p90 != 3 {
		t.Fatalf("summarise(3,1,2) = %+v", s)
	}
}
