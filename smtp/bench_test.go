package smtp

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
)

// benchSessions is the number of concurrent sessions of the benchmarks, as
// in the end-to-end load test.
const benchSessions = 20

// BenchmarkSMTP sends 10 KiB messages over 20 concurrent sessions, straight
// to a go-smtp upstream and through the proxy, and reports messages per
// second and the 99th percentile of the time per message (MAIL to the
// final reply):
//
//	go test -run XXX -bench SMTP -benchmem ./smtp
//
// The "interleaved" run alternates batches of the two and reports both
// with their ratio, which a machine shared with other work skews less.
func BenchmarkSMTP(b *testing.B) {
	body, _ := message(0, 10<<10)
	for _, mode := range []string{"direct", "proxy"} {
		b.Run(mode, func(b *testing.B) {
			addr := benchTarget(b, mode == "proxy")
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			r := runLoad(b, benchDial(b, addr), b.N, body)
			b.StopTimer()
			b.ReportMetric(r.rate(), "msgs/s")
			b.ReportMetric(r.p99ms(), "p99-ms")
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		direct := benchDial(b, benchTarget(b, false))
		proxy := benchDial(b, benchTarget(b, true))
		b.SetBytes(int64(len(body)))
		b.ResetTimer()
		var d, p result
		const batch = 200
		for done := 0; done < b.N; done += 2 * batch {
			k := min(batch, (b.N-done+1)/2)
			d.add(runLoad(b, direct, k, body))
			p.add(runLoad(b, proxy, k, body))
		}
		b.StopTimer()
		b.ReportMetric(d.rate(), "direct-msgs/s")
		b.ReportMetric(p.rate(), "proxy-msgs/s")
		b.ReportMetric(p.rate()/d.rate(), "rate-ratio")
		b.ReportMetric(d.p99ms(), "direct-p99-ms")
		b.ReportMetric(p.p99ms(), "proxy-p99-ms")
	})
}

// benchTarget starts an upstream and, for the proxy, a proxy in front of
// it; it returns the address to send to.
func benchTarget(b *testing.B, proxy bool) string {
	b.Helper()
	up := startMailServer(b, mailServerOpts{})
	if !proxy {
		return up.addr
	}
	n := newFakeAdmitter(b)
	n.addUpstream(b, "u1", up.addr)
	_, addr := startProxy(b, Config{Logger: hclog.NewNullLogger()}, n)
	return addr
}

// benchDial opens the sessions of a load, each greeted.
func benchDial(b *testing.B, addr string) []*gosmtp.Client {
	b.Helper()
	clients := make([]*gosmtp.Client, benchSessions)
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
	return clients
}

// result is the outcome of a load: the time per message and the wall time.
type result struct {
	lat     []time.Duration
	elapsed time.Duration
}

func (r *result) add(o result) {
	r.lat = append(r.lat, o.lat...)
	r.elapsed += o.elapsed
}

func (r result) rate() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r result) p99ms() float64 {
	if len(r.lat) == 0 {
		return 0
	}
	s := slices.Clone(r.lat)
	slices.Sort(s)
	return float64(s[min(len(s)-1, len(s)*99/100)].Microseconds()) / 1000
}

// runLoad sends n messages over the clients, concurrently.
func runLoad(b *testing.B, clients []*gosmtp.Client, n int, body []byte) result {
	b.Helper()
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	lat := make([][]time.Duration, len(clients))
	var wg sync.WaitGroup
	var failed sync.Once
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				t0 := time.Now()
				if err := c.SendMail("bench@test", []string{"rcpt@test"}, bytes.NewReader(body)); err != nil {
					failed.Do(func() { b.Error(fmt.Errorf("send: %w", err)) })
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	return result{lat: slices.Concat(lat...), elapsed: time.Since(start)}
}
