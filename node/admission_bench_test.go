package node_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"vulcan/node"
)

// benchNode starts a lone node on loopback with an embedded store in a
// temporary directory; authURL "" runs it open.
func benchNode(b *testing.B, authURL string) *node.Node {
	b.Helper()
	cfg := node.DefaultConfig()
	cfg.Node = "bench"
	cfg.Bind = "127.0.0.1:0"
	cfg.HTTP = "127.0.0.1:0"
	cfg.Admin = "127.0.0.1:0"
	cfg.SMTP = ""
	cfg.Data = b.TempDir()
	if authURL != "" {
		cfg.AuthURLs = []string{authURL}
	}
	n, err := node.New(cfg, nil)
	if err != nil {
		b.Fatalf("start node: %v", err)
	}
	b.Cleanup(func() { _ = n.Close() })
	if err := n.PutService(node.Service{Name: "web"}); err != nil {
		b.Fatal(err)
	}
	if err := n.PutUpstream(node.Upstream{Service: "web", ID: "u1", Addr: "127.0.0.1:1"}); err != nil {
		b.Fatal(err)
	}
	return n
}

// benchAuthServer answers every user with the given JSON and counts calls.
func benchAuthServer(b *testing.B, answer string) (*httptest.Server, *atomic.Int64) {
	b.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answer)
	}))
	b.Cleanup(srv.Close)
	return srv, &calls
}

func benchFacts() node.Facts {
	return node.Facts{
		Protocol: node.ProtoHTTP, HasCredentials: true,
		Username: "alice", Password: "secret",
		Method: "GET", URI: "/api/v1/items?page=2", Host: "shop.example.com", Path: "/api/v1/items",
		ClientIP: "127.0.0.1",
	}
}

// BenchmarkAdmitHTTPCached measures the admission of an identity whose
// authorization is cached: the auth server is asked once, before the timer.
func BenchmarkAdmitHTTPCached(b *testing.B) {
	cases := []struct {
		name, answer string
		limit        bool
	}{
		{"service", `{"auth_token":"t-alice","service":"web"}`, false},
		{"upstream_list", `{"auth_token":"t-alice","upstream":"127.0.0.1:1,127.0.0.2:1"}`, false},
		{"host_rules", `{"auth_token":"t-alice"}`, false},
		{"service_with_limit", `{"auth_token":"t-alice","service":"web"}`, true},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			srv, calls := benchAuthServer(b, tc.answer)
			n := benchNode(b, srv.URL)
			if tc.limit {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := n.AddLimit(ctx, node.Limit{AuthToken: "^t-", Period: 60, Threshold: math.MaxInt32}); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			f := benchFacts()
			if _, err := n.AdmitHTTP(ctx, f); err != nil {
				b.Fatalf("warm the cache: %v", err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := n.AdmitHTTP(ctx, f); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if c := calls.Load(); c != 1 {
				b.Fatalf("%d auth calls, want 1 (the cache missed)", c)
			}
		})
	}
}

// BenchmarkAdmitHTTPOpen is the same admission without an authorization
// server, for comparison: the token is the client's IP.
func BenchmarkAdmitHTTPOpen(b *testing.B) {
	n := benchNode(b, "")
	ctx := context.Background()
	f := benchFacts()
	f.HasCredentials = false
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.AdmitHTTP(ctx, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdmitHTTPCachedParallel admits one cached identity from every
// core at once: the cache's shard locks are on this path.
func BenchmarkAdmitHTTPCachedParallel(b *testing.B) {
	srv, _ := benchAuthServer(b, `{"auth_token":"t-alice","service":"web"}`)
	n := benchNode(b, srv.URL)
	ctx := context.Background()
	f := benchFacts()
	if _, err := n.AdmitHTTP(ctx, f); err != nil {
		b.Fatalf("warm the cache: %v", err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := n.AdmitHTTP(ctx, f); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
