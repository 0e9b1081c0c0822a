// Package admin is the admin API of a node (JSON over HTTP) and its
// dashboard. Writes are accepted on any node; the node replicates them.
package admin

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"vulcan/node"
)

// Node is what the admin API needs of a node. Implementations are safe for
// concurrent use.
type Node interface {
	Status() node.Status
	Members() []node.Member
	Services() []node.ServiceView
	Service(name string) (node.ServiceView, error)
	PutService(s node.Service) error
	DeleteService(name string) error
	PutUpstream(u node.Upstream) error
	DeleteUpstream(service, id string) error
	Drain(ctx context.Context, service, id string, wait time.Duration) (node.DrainProgress, error)
	Enable(service, id string) error
	Limits() []node.Limit
	AddLimit(ctx context.Context, l node.Limit) (node.Limit, error)
	DeleteLimit(ctx context.Context, id string) error
	MetricsHandler() http.Handler
}

// Config configures the admin API.
type Config struct {
	// Token, when set, must be sent as "Authorization: Bearer TOKEN".
	Token string
	// MaxDrainWait caps the wait a drain may ask for (default 10m).
	MaxDrainWait time.Duration
	Logger       hclog.Logger
}

// maxBody caps admin request bodies.
const maxBody = 1 << 20

//go:embed ui
var uiFiles embed.FS

// API serves the admin endpoints.
type API struct {
	cfg  Config
	node Node
	log  hclog.Logger
	mux  *http.ServeMux
}

// New builds the admin API for n.
func New(cfg Config, n Node) *API {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxDrainWait == 0 {
		cfg.MaxDrainWait = 10 * time.Minute
	}
	a := &API{cfg: cfg, node: n, log: cfg.Logger, mux: http.NewServeMux()}
	a.route("/v1/status", methods{"GET": a.status})
	a.route("/v1/members", methods{"GET": a.members})
	a.route("/v1/services", methods{"GET": a.services})
	a.route("/v1/services/{name}", methods{"GET": a.getService, "PUT": a.putService, "DELETE": a.deleteService})
	a.route("/v1/services/{name}/upstreams/{id}", methods{"PUT": a.putUpstream, "DELETE": a.deleteUpstream})
	a.route("/v1/services/{name}/upstreams/{id}/drain", methods{"POST": a.drain})
	a.route("/v1/services/{name}/upstreams/{id}/enable", methods{"POST": a.enable})
	a.route("/v1/limits", methods{"GET": a.limits, "POST": a.addLimit})
	a.route("/v1/limits/{id}", methods{"DELETE": a.deleteLimit})
	a.route("/metrics", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		n.MetricsHandler().ServeHTTP(w, r)
		return nil
	}})
	// Profiles, for operators chasing latency or memory: behind the
	// token like the rest of the API.
	a.mux.HandleFunc("/debug/pprof/", a.guard(pprof.Index))
	a.mux.HandleFunc("/debug/pprof/profile", a.guard(pprof.Profile))
	a.mux.HandleFunc("/debug/pprof/trace", a.guard(pprof.Trace))
	ui, _ := fs.Sub(uiFiles, "ui")
	a.mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(ui)))
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			http.Redirect(w, r, "/ui/", http.StatusFound)
			return
		}
		writeJSON(w, http.StatusNotFound, errorBody{"no such endpoint"})
	})
	return a
}

// ServeHTTP serves the admin API.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// methods maps an HTTP method to its handler; other methods get 405.
type methods map[string]func(http.ResponseWriter, *http.Request) error

func (a *API) route(pattern string, m methods) {
	allow := make([]string, 0, len(m))
	for k := range m {
		allow = append(allow, k)
	}
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vulcan-admin"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{"admin token required"})
			return
		}
		h, ok := m[r.Method]
		if !ok && r.Method == http.MethodHead {
			h, ok = m[http.MethodGet]
		}
		if !ok {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path)})
			return
		}
		if err := h(w, r); err != nil {
			a.fail(w, r, err)
		}
	})
}

// guard requires the admin token before h.
func (a *API) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			writeJSON(w, http.StatusUnauthorized, errorBody{"admin token required"})
			return
		}
		h(w, r)
	}
}

func (a *API) authorized(r *http.Request) bool {
	if a.cfg.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.cfg.Token)) == 1
}

type errorBody struct {
	Error string `json:"error"`
}

// badRequest marks an error as the client's fault.
type badRequest struct{ err error }

func (b badRequest) Error() string { return b.err.Error() }
func (b badRequest) Unwrap() error { return b.err }

// fail is the one place where admin errors become statuses.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br badRequest
	code := http.StatusInternalServerError
	switch {
	case errors.As(err, &br), errors.Is(err, node.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, node.ErrNotFound):
		code = http.StatusNotFound
	}
	if code == http.StatusInternalServerError {
		a.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	} else {
		a.log.Info("admin request refused", "method", r.Method, "path", r.URL.Path, "status", code, "error", err)
	}
	writeJSON(w, code, errorBody{err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, so a typo in a field name is reported rather than ignored.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest{fmt.Errorf("malformed JSON body: %w", err)}
	}
	if dec.More() {
		return badRequest{errors.New("malformed JSON body: trailing data")}
	}
	return nil
}

func (a *API) status(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, a.node.Status())
	return nil
}

func (a *API) members(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, a.node.Members())
	return nil
}

func (a *API) services(w http.ResponseWriter, _ *http.Request) error {
	s := a.node.Services()
	if s == nil {
		s = []node.ServiceView{}
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func (a *API) getService(w http.ResponseWriter, r *http.Request) error {
	s, err := a.node.Service(r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func (a *API) putService(w http.ResponseWriter, r *http.Request) error {
	var s node.Service
	if err := decode(r, &s); err != nil {
		return err
	}
	name := r.PathValue("name")
	if s.Name != "" && s.Name != name {
		return badRequest{fmt.Errorf("body names service %q but the path names %q", s.Name, name)}
	}
	s.Name = name
	if err := a.node.PutService(s); err != nil {
		return err
	}
	v, err := a.node.Service(name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) deleteService(w http.ResponseWriter, r *http.Request) error {
	if err := a.node.DeleteService(r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) putUpstream(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Addr   string `json:"addr"`
		Weight int    `json:"weight"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	u := node.Upstream{Service: r.PathValue("name"), ID: r.PathValue("id"), Addr: body.Addr, Weight: body.Weight}
	if err := a.node.PutUpstream(u); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (a *API) deleteUpstream(w http.ResponseWriter, r *http.Request) error {
	if err := a.node.DeleteUpstream(r.PathValue("name"), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// drain answers 200 at once without wait; with wait, 200 when the drain is
// complete on every alive member, or 408 with what is left when wait runs out.
func (a *API) drain(w http.ResponseWriter, r *http.Request) error {
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return badRequest{fmt.Errorf("wait %q is not a duration such as 30s", s)}
		}
		wait = min(d, a.cfg.MaxDrainWait)
	}
	p, err := a.node.Drain(r.Context(), r.PathValue("name"), r.PathValue("id"), wait)
	if err != nil {
		return err
	}
	code := http.StatusOK
	if wait > 0 && !p.Done {
		code = http.StatusRequestTimeout
	}
	writeJSON(w, code, p)
	return nil
}

func (a *API) enable(w http.ResponseWriter, r *http.Request) error {
	if err := a.node.Enable(r.PathValue("name"), r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"state": "active"})
	return nil
}

func (a *API) limits(w http.ResponseWriter, _ *http.Request) error {
	ls := a.node.Limits()
	if ls == nil {
		ls = []node.Limit{}
	}
	writeJSON(w, http.StatusOK, ls)
	return nil
}

func (a *API) addLimit(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		AuthToken string `json:"auth_token"`
		Protocol  string `json:"protocol"`
		Method    string `json:"method"`
		Path      string `json:"path"`
		DataSize  int64  `json:"data_size"`
		Period    *int   `json:"period"`
		Threshold *int64 `json:"threshold"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Period == nil || body.Threshold == nil {
		return badRequest{errors.New("period and threshold are required")}
	}
	l, err := a.node.AddLimit(r.Context(), node.Limit{
		AuthToken: body.AuthToken, Protocol: body.Protocol, Method: body.Method, Path: body.Path,
		DataSize: body.DataSize, Period: *body.Period, Threshold: *body.Threshold,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, l)
	return nil
}

func (a *API) deleteLimit(w http.ResponseWriter, r *http.Request) error {
	if err := a.node.DeleteLimit(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
