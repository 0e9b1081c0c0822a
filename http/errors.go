package http

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"vulcan/node"
)

// writeError turns an admission error into the client's status; it is the
// one place where the HTTP front end maps errors to statuses.
func (s *Server) writeError(hw http.ResponseWriter, r *http.Request, err error) {
	w := &statusRecorder{ResponseWriter: hw}
	defer func() { s.node.ObserveHTTP(w.status()) }()
	var denied *node.AuthDeniedError
	var limited *node.RateLimitedError
	switch {
	case r.Context().Err() != nil:
		// The client went away during admission: nobody reads an answer,
		// and it is logged as nginx does, 499.
		s.log.Debug("client went away", "method", r.Method, "uri", r.URL.Path)
		w.WriteHeader(499)
	case errors.Is(err, node.ErrNoCredentials):
		w.Header().Set("WWW-Authenticate", `Basic realm="vulcan"`)
		s.reply(w, http.StatusUnauthorized, "credentials required")
	case errors.As(err, &denied):
		// The authorization server's refusal is passed on as it is.
		if denied.ContentType != "" {
			w.Header().Set("Content-Type", denied.ContentType)
		}
		if denied.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="vulcan"`)
		}
		w.WriteHeader(denied.Status)
		_, _ = w.Write(denied.Body)
	case errors.Is(err, node.ErrAuthUnavailable):
		s.reply(w, http.StatusServiceUnavailable, "authorization unavailable")
	case errors.As(err, &limited):
		d := limited.Decision
		retry := max(d.RetryAfter, 1)
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_ = json.NewEncoder(w).Encode(struct {
			Error        string `json:"error"`
			LimitID      string `json:"limit_id"`
			RetrySeconds int    `json:"retry_seconds"`
		}{"rate limit exceeded", d.Limit.ID, retry})
	case errors.Is(err, node.ErrStoreUnavailable):
		w.Header().Set("Retry-After", "1")
		s.reply(w, http.StatusServiceUnavailable, "rate limit store unavailable")
	case errors.Is(err, node.ErrNoService):
		s.reply(w, http.StatusNotFound, "no service for this host and path")
	case errors.Is(err, node.ErrNoUpstream):
		s.reply(w, http.StatusServiceUnavailable, "no upstream available")
	default:
		s.log.Error("admission failed", "method", r.Method, "uri", r.URL.Path, "error", err)
		s.reply(w, http.StatusInternalServerError, "internal error")
	}
}

// proxyError is ReverseProxy's ErrorHandler: the upstream failed after a
// pick. A client that went away gets nothing (nginx logs such as 499).
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
		s.log.Debug("client went away", "method", r.Method, "uri", r.URL.Path)
		w.WriteHeader(499)
		return
	}
	st, _ := r.Context().Value(stateKey{}).(*proxyState)
	addr := ""
	if st != nil {
		addr = st.handle.Addr()
	}
	if isTimeout(err) && !isDialError(err) {
		s.log.Warn("upstream timed out", "upstream", addr, "method", r.Method, "uri", r.URL.Path, "error", err)
		s.reply(w, http.StatusGatewayTimeout, "upstream timed out")
		return
	}
	s.log.Warn("upstream failed", "upstream", addr, "method", r.Method, "uri", r.URL.Path, "error", err)
	s.reply(w, http.StatusBadGateway, "upstream failed")
}

func (s *Server) reply(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	_, _ = w.Write(append(b, '\n'))
}
