package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"vulcan/node"
	"vulcan/ratelimit"
)

// fakeNode validates like a node and records nothing: the admin API's own
// decoding and status mapping are what these tests are about.
type fakeNode struct{}

func (fakeNode) Status() node.Status                       { return node.Status{Node: "n"} }
func (fakeNode) Members() []node.Member                    { return nil }
func (fakeNode) Services() []node.ServiceView              { return nil }
func (fakeNode) Service(string) (node.ServiceView, error)  { return node.ServiceView{}, nil }
func (fakeNode) DeleteService(string) error                { return nil }
func (fakeNode) DeleteUpstream(string, string) error       { return nil }
func (fakeNode) Enable(string, string) error               { return nil }
func (fakeNode) Limits() []node.Limit                      { return nil }
func (fakeNode) DeleteLimit(context.Context, string) error { return nil }
func (fakeNode) MetricsHandler() http.Handler              { return http.NotFoundHandler() }

func (fakeNode) PutService(s node.Service) error {
	if err := s.Normalize(); err != nil {
		return node.ErrInvalid
	}
	return nil
}

func (fakeNode) PutUpstream(u node.Upstream) error {
	if err := u.Normalize(); err != nil {
		return node.ErrInvalid
	}
	return nil
}

func (fakeNode) Drain(context.Context, string, string, time.Duration) (node.DrainProgress, error) {
	return node.DrainProgress{Done: true}, nil
}

func (fakeNode) AddLimit(_ context.Context, l node.Limit) (node.Limit, error) {
	if err := ratelimit.Validate(l); err != nil {
		return l, node.ErrInvalid
	}
	return l, nil
}

// FuzzAdminBodies sends arbitrary bodies to every write endpoint: each
// answer is a success or a 4xx with a JSON error, never a panic or a 5xx.
func FuzzAdminBodies(f *testing.F) {
	f.Add(`{"protocol": "http", "hosts": ["a.example.com"], "health_check": {"interval": "1s"}}`)
	f.Add(`{"addr": "127.0.0.1:80", "weight": 2}`)
	f.Add(`{"path": "(", "period": 1, "threshold": 1}`)
	f.Add(`{"health_check": {"interval": 1e300}}`)
	f.Add(`[`)
	a := New(Config{}, fakeNode{})
	f.Fuzz(func(t *testing.T, body string) {
		for _, target := range []struct{ method, path string }{
			{"PUT", "/v1/services/web"},
			{"PUT", "/v1/services/web/upstreams/u1"},
			{"POST", "/v1/limits"},
		} {
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, httptest.NewRequest(target.method, target.path, strings.NewReader(body)))
			if rec.Code >= 500 {
				t.Fatalf("%s %s %q: status %d", target.method, target.path, body, rec.Code)
			}
			if rec.Code >= 400 && !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("%s %s %q: %d without a JSON error", target.method, target.path, body, rec.Code)
			}
		}
	})
}
