package upstreams

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"sync"
	"time"
)

// RunChecks runs the active health checks of every upstream whose service
// has a HealthCheck, until ctx is done. It follows registration changes:
// new upstreams start being checked, removed ones stop, and a changed check
// or address restarts the check. It blocks until ctx is done, and returns
// once every check it started has stopped. Run it once per table: two would
// check everything twice.
//
// Each check runs at once and then every interval. HTTP services are checked
// with GET http://addr+path (2xx or 3xx is healthy, redirects are not
// followed); SMTP services by a connection that must greet with 220 and
// answer EHLO with 250. A failure takes an up upstream down, a pass brings a
// down one up, and either change is reported through OnHealth.
func (t *Table) RunChecks(ctx context.Context) {
	tr := &http.Transport{
		// A fresh connection per check, as a load balancer's check should
		// prove that the upstream still accepts them.
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
		DialContext:            (&net.Dialer{}).DialContext,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	var wg sync.WaitGroup
	running := map[string]*runningCheck{}
	stop := func(key string) {
		r := running[key]
		r.cancel()
		<-r.done // so that two checks of one upstream never overlap
		delete(running, key)
	}
	defer func() {
		for key := range running {
			stop(key)
		}
		wg.Wait()
	}()
	for {
		snap := t.snap.Load()
		want := wantedChecks(snap)
		for key, r := range running {
			if w, ok := want[key]; !ok || w.spec != r.spec {
				stop(key)
			}
		}
		for key, w := range want {
			if _, ok := running[key]; ok {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			r := &runningCheck{spec: w.spec, cancel: cancel, done: make(chan struct{})}
			running[key] = r
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(r.done)
				t.checkLoop(cctx, w.m, w.spec, client)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-snap.changed:
		}
	}
}

// checkSpec is everything a running check depends on: when it changes, the
// check restarts.
type checkSpec struct {
	h        *target
	proto    string
	addr     string
	path     string
	interval time.Duration
	timeout  time.Duration
}

type runningCheck struct {
	spec   checkSpec
	cancel context.CancelFunc
	done   chan struct{}
}

type wantedCheck struct {
	m    *member
	spec checkSpec
}

func wantedChecks(snap *snapshot) map[string]wantedCheck {
	want := map[string]wantedCheck{}
	for _, s := range snap.services {
		hc := s.def.HealthCheck
		if hc == nil {
			continue
		}
		for _, m := range s.members {
			want[m.key] = wantedCheck{m: m, spec: checkSpec{
				h:        m.h,
				proto:    s.def.Protocol,
				addr:     m.addr,
				path:     hc.Path,
				interval: time.Duration(hc.Interval),
				timeout:  time.Duration(hc.Timeout),
			}}
		}
	}
	return want
}

// checkLoop checks one upstream until ctx is done.
func (t *Table) checkLoop(ctx context.Context, m *member, spec checkSpec, client *http.Client) {
	tick := time.NewTicker(spec.interval)
	defer tick.Stop()
	for {
		err := t.probe(ctx, spec, client)
		if ctx.Err() != nil {
			return // stopped mid-check: the result says nothing of the upstream
		}
		if err != nil {
			t.log.Debug("health check failed", "service", m.service, "id", m.id, "addr", m.addr, "error", err)
			m.fail(false, fmt.Errorf("health check: %w", err))
		} else {
			m.recover()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *Table) probe(ctx context.Context, spec checkSpec, client *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, spec.timeout)
	defer cancel()
	if spec.proto == ProtoSMTP {
		return probeSMTP(ctx, spec.addr, t.cfg.CheckHELO)
	}
	return probeHTTP(ctx, client, spec.addr, spec.path)
}

// probeHTTP passes on a 2xx or 3xx answer to GET http://addr+path.
func probeHTTP(ctx context.Context, client *http.Client, addr, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("check %s%s: %w", addr, path, err)
	}
	req.Header.Set("User-Agent", "vulcan-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("check %s%s: %w", addr, path, err)
	}
	// Drain a little so the server sees a clean close; the body is not
	// judged.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("check %s%s: status %d", addr, path, resp.StatusCode)
	}
	return nil
}

// probeSMTP passes if addr greets with 220 and answers EHLO with 250.
func probeSMTP(ctx context.Context, addr, helo string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("check %s: %w", addr, err)
	}
	defer conn.Close()
	// Close on cancel too, so that stopping the checks does not wait out
	// a slow server.
	defer context.AfterFunc(ctx, func() { _ = conn.Close() })()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return fmt.Errorf("check %s: %w", addr, err)
		}
	}
	tc := textproto.NewConn(conn)
	if _, _, err := tc.ReadResponse(220); err != nil {
		return fmt.Errorf("check %s: greeting: %w", addr, err)
	}
	if err := tc.PrintfLine("EHLO %s", helo); err != nil {
		return fmt.Errorf("check %s: EHLO: %w", addr, err)
	}
	if _, _, err := tc.ReadResponse(250); err != nil {
		return fmt.Errorf("check %s: EHLO: %w", addr, err)
	}
	// QUIT is a courtesy: the verdict is already in.
	if tc.PrintfLine("QUIT") == nil {
		_, _, _ = tc.ReadResponse(221)
	}
	return nil
}
