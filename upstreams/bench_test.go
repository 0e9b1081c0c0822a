package upstreams

import (
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func benchTable(b *testing.B, lb string, n int) *Table {
	b.Helper()
	tb := NewTable(Config{Logger: hclog.NewNullLogger()})
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP, LB: lb})
	for i := range n {
		tb.PutUpstream(Upstream{Service: "web", ID: fmt.Sprintf("u%d", i), Addr: fmt.Sprintf("127.0.0.%d:80", i+1), Weight: 1 + i%3})
	}
	return tb
}

// BenchmarkPick measures a pick and its release: the per-request cost on
// the hot path.
func BenchmarkPick(b *testing.B) {
	for _, lb := range []string{LBRoundRobin, LBLeastConn} {
		for _, n := range []int{2, 10} {
			b.Run(fmt.Sprintf("%s/%d/serial", lb, n), func(b *testing.B) {
				tb := benchTable(b, lb, n)
				b.ReportAllocs()
				for b.Loop() {
					h, err := tb.Pick("web", nil)
					if err != nil {
						b.Fatal(err)
					}
					h.Release()
				}
			})
			b.Run(fmt.Sprintf("%s/%d/parallel", lb, n), func(b *testing.B) {
				tb := benchTable(b, lb, n)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						h, err := tb.Pick("web", nil)
						if err != nil {
							b.Error(err)
							return
						}
						h.Release()
					}
				})
			})
		}
	}
}

func BenchmarkPickAddrs(b *testing.B) {
	tb := benchTable(b, LBRoundRobin, 2)
	lists := map[string][]string{
		"registered": {"127.0.0.1:80", "127.0.0.2:80"},
		"adhoc":      {"10.0.0.1:3001", "10.0.0.2:3002"},
	}
	for name, addrs := range lists {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					h, err := tb.PickAddrs(addrs, nil)
					if err != nil {
						b.Error(err)
						return
					}
					h.Release()
				}
			})
		})
	}
}

func BenchmarkRoute(b *testing.B) {
	tb := routeTable(b)
	for _, c := range [][2]string{
		{"example.com", "/api/users"},
		{"c.b.example.com:8443", "/"},
		{"unknown.org", "/static/app.js"},
	} {
		b.Run(c[0], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := tb.Route(c[0], c[1]); !ok {
					b.Fatal("no route")
				}
			}
		})
	}
}
