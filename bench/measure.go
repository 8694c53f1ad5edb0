package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of
// sorted latencies: the smallest value that at least p% of them do not
// exceed. It is 0 for no latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// summarize sorts the latencies of the ops that succeeded and fills in
// the figures: ops/s is those ops over the elapsed time.
func summarize(s *summary, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	s.Ops = int64(len(lat))
	if elapsed > 0 {
		s.OpsPerSec = math.Round(float64(len(lat))/elapsed.Seconds()*10) / 10
	}
	s.Duration = math.Round(elapsed.Seconds()*1000) / 1000
	us := func(d time.Duration) int64 { return d.Round(time.Microsecond).Microseconds() }
	s.P50, s.P99 = us(percentile(lat, 50)), us(percentile(lat, 99))
	if len(lat) > 0 {
		s.Max = us(lat[len(lat)-1])
	}
}

// roundTo rounds x to n decimal places.
func roundTo(x float64, n int) float64 {
	p := math.Pow10(n)
	return math.Round(x*p) / p
}

// measurement is the measured phase: concurrency workers run ops until
// the duration is up.
type measurement struct {
	duration    time.Duration
	concurrency int
	newWorker   workerFactory
	progress    io.Writer // nil: no progress line
	label       string
	stopped     func() // called as soon as the last worker is done
}

// errorShare is the share of failed ops (in percent) past which a
// run stops: its figures would measure failures.
const errorShare = 1

// run measures, and returns the latencies of the ops that succeeded, the
// number that failed and the time the phase took.
func (m measurement) run(ctx context.Context) (lat []time.Duration, failed int64, elapsed time.Duration, err error) {
	workers := make([]opFunc, m.concurrency)
	for i := range workers {
		op, release, err := m.newWorker(i)
		if err != nil {
			return nil, 0, 0, err
		}
		defer release()
		workers[i] = op
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ok, attempts, errs atomic.Int64
	var aborted atomic.Bool
	var once sync.Once
	var firstErr string
	perWorker := make([][]time.Duration, m.concurrency)

	start := time.Now()
	deadline := start.Add(m.duration)
	stopProgress := startProgress(m.progress, func() string {
		el := time.Since(start)
		n := ok.Load()
		return fmt.Sprintf("%s  %.1fs/%s  %d ops  %.0f ops/s", m.label, min(el, m.duration).Seconds(), m.duration, n, float64(n)/el.Seconds())
	})
	var wg sync.WaitGroup
	for i, op := range workers {
		wg.Go(func() {
			l := make([]time.Duration, 0, 1<<14)
			defer func() { perWorker[i] = l }()
			for time.Now().Before(deadline) && runCtx.Err() == nil {
				t0 := time.Now()
				res := op(runCtx)
				d := time.Since(t0)
				if runCtx.Err() != nil {
					return // stopped midway: the op's outcome says nothing
				}
				n := attempts.Add(1)
				if !res.OK() {
					e := errs.Add(1)
					once.Do(func() { firstErr = fmt.Sprint(res.Data) })
					if n >= 100 && e*100 > errorShare*n {
						aborted.Store(true)
						cancel()
						return
					}
					continue
				}
				ok.Add(1)
				l = append(l, d)
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	if m.stopped != nil {
		m.stopped()
	}
	stopProgress()
	if ctx.Err() != nil {
		return nil, 0, 0, errors.New("interrupted")
	}
	n, e := attempts.Load(), errs.Load()
	if aborted.Load() || e*100 > errorShare*n {
		return nil, e, elapsed, fmt.Errorf("%d of %d ops failed (more than %d%%); the first error: %s", e, n, errorShare, firstErr)
	}
	if ok.Load() == 0 {
		return nil, e, elapsed, fmt.Errorf("no op completed in %s", m.duration)
	}
	total := 0
	for _, l := range perWorker {
		total += len(l)
	}
	lat = make([]time.Duration, 0, total)
	for _, l := range perWorker {
		lat = append(lat, l...)
	}
	return lat, e, elapsed, nil
}

// startProgress rewrites one line on w every tick with line(), until
// the function it returns is called, which clears the line. With w nil it
// does nothing.
func startProgress(w io.Writer, line func() string) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "\r%s\x1b[K", line())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		fmt.Fprint(w, "\r\x1b[K")
	}
}
