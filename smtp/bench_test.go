package smtp

import (
	"bytes"
	"slices"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
)

// BenchmarkSMTP sends 10 KiB messages over 8 concurrent sessions, straight
// to a go-smtp upstream and through the proxy, and reports messages per
// second and the 99th percentile of the time per message (MAIL to the
// final reply). Compare the two sub-benchmarks for the proxy's cost:
//
//	go test -run XXX -bench SMTP -benchmem ./smtp
func BenchmarkSMTP(b *testing.B) {
	body, _ := message(0, 10<<10)
	for _, mode := range []string{"direct", "proxy"} {
		b.Run(mode, func(b *testing.B) {
			up := startMailServer(b, mailServerOpts{})
			target := up.addr
			if mode == "proxy" {
				n := newFakeAdmitter(b)
				n.addUpstream(b, "u1", up.addr)
				_, target = startProxy(b, Config{Logger: hclog.NewNullLogger()}, n)
			}
			runLoad(b, target, 8, body)
		})
	}
}

// runLoad sends b.N messages over the given number of sessions and reports
// the throughput and the p99 latency per message.
func runLoad(b *testing.B, addr string, sessions int, body []byte) {
	b.Helper()
	b.SetBytes(int64(len(body)))
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	lat := make([][]time.Duration, sessions)
	clients := make([]*gosmtp.Client, sessions)
	for i := range clients {
		c, err := gosmtp.Dial(addr)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Hello("bench.test"); err != nil {
			b.Fatal(err)
		}
		clients[i] = c
		b.Cleanup(func() { _ = c.Close() })
	}
	var wg sync.WaitGroup
	var failed sync.Once
	b.ResetTimer()
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				t0 := time.Now()
				if err := c.SendMail("bench@test", []string{"rcpt@test"}, bytes.NewReader(body)); err != nil {
					failed.Do(func() { b.Error(err) })
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	p99 := all[min(len(all)-1, len(all)*99/100)]
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}
