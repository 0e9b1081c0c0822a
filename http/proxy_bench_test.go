package http

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// benchProxy starts a backend answering 1 KiB (and counting POST bodies), a
// lone node routing to it and the proxy, and returns the proxy's address.
// With general set, the proxy sends everything through net/http's
// Transport, for comparison.
func benchProxy(b *testing.B, general bool) string {
	b.Helper()
	page := bytes.Repeat([]byte("x"), 1024)
	backend := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", "1024")
		_, _ = w.Write(page)
	}))
	n := startNode(b, backend)
	s, addr := startProxy(b, Config{}, n)
	if general {
		s.proxy.Transport.(*retryTransport).next = s.upstream.fallback
	}
	return addr
}

// BenchmarkProxy drives the whole front end over loopback sockets: a client
// connection, the proxy (admission, pick, ReverseProxy, upstream transport)
// and a backend, all in this process, so allocs/op counts all three.
func BenchmarkProxy(b *testing.B) {
	b.Run("transport=upstream", func(b *testing.B) { benchmarkProxy(b, false) })
	b.Run("transport=general", func(b *testing.B) { benchmarkProxy(b, true) })
}

func benchmarkProxy(b *testing.B, general bool) {
	addr := benchProxy(b, general)
	get := "GET / HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
	body := strings.Repeat("p", 16<<10)
	post := "POST /upload HTTP/1.1\r\nHost: shop.example.com\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
	cases := []struct {
		name, req string
		want      int64
	}{
		{"GET_1KiB", get, 1024},
		{"POST_16KiB", post, int64(len(strconv.Itoa(len(body))))},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			c := dialRaw(b, addr, tc.req)
			b.ReportAllocs()
			for b.Loop() {
				code, n, err := c.do()
				if err != nil || code != 200 || n != tc.want {
					b.Fatalf("got %d with %d bytes: %v", code, n, err)
				}
			}
		})
	}
	b.Run("GET_1KiB_parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			c := dialRaw(b, addr, get)
			for pb.Next() {
				code, n, err := c.do()
				if err != nil || code != 200 || n != 1024 {
					b.Errorf("got %d with %d bytes: %v", code, n, err)
					return
				}
			}
		})
	})
}
