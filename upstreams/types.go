// Package upstreams holds services and their upstreams: the live table that
// requests are routed through, the selection policies, health and drain.
//
// It knows nothing of HTTP, SMTP, gossip or storage: the node feeds it
// registrations and administrative state, and it reports what it observes
// (health changes) through a callback.
package upstreams

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Protocols a service can speak.
const (
	ProtoHTTP = "http"
	ProtoSMTP = "smtp"
)

// Selection policies.
const (
	LBRoundRobin = "round_robin"
	LBLeastConn  = "least_conn"
)

// AdminState is the administrative state an operator sets on an upstream.
type AdminState string

// Administrative states.
const (
	StateActive   AdminState = "active"
	StateDraining AdminState = "draining"
)

// Health is the observed health of an upstream.
type Health string

// Health verdicts.
const (
	HealthUp   Health = "up"
	HealthDown Health = "down"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("5s"); a bare number is taken as seconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts "1.5s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n float64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string like \"5s\" or a number of seconds")
	}
	*d = Duration(n * float64(time.Second))
	return nil
}

// HealthCheck configures the active health check of a service's upstreams.
// For HTTP services it is a GET of Path that must answer 2xx or 3xx; for SMTP
// services a connect, a 220 greeting and EHLO.
type HealthCheck struct {
	Path     string   `json:"path,omitempty"`
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
}

// Service is a named group of upstreams and the rules that route to it.
type Service struct {
	Name        string       `json:"name"`
	Protocol    string       `json:"protocol"`
	Hosts       []string     `json:"hosts,omitempty"`
	PathPrefix  string       `json:"path_prefix,omitempty"`
	LB          string       `json:"lb,omitempty"`
	HealthCheck *HealthCheck `json:"health_check,omitempty"`
	// Retry, when nil, means true: idempotent requests whose upstream
	// connection failed are retried once on another upstream.
	Retry    *bool `json:"retry,omitempty"`
	PassAuth bool  `json:"pass_auth,omitempty"`
}

// Upstream is one server of a service.
type Upstream struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Weight  int    `json:"weight"`
}

// Defaults for health checks.
const (
	DefaultCheckInterval = 5 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether s may name a service or an upstream: letters,
// digits, dot, underscore and dash, at most 128 characters.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Normalize fills in defaults and validates the service. It returns an
// error that names the offending field.
func (s *Service) Normalize() error {
	if !ValidName(s.Name) {
		return fmt.Errorf("invalid service name %q: use letters, digits, '.', '_' or '-'", s.Name)
	}
	switch s.Protocol {
	case "":
		s.Protocol = ProtoHTTP
	case ProtoHTTP, ProtoSMTP:
	default:
		return fmt.Errorf("invalid protocol %q: want http or smtp", s.Protocol)
	}
	switch s.LB {
	case "":
		s.LB = LBRoundRobin
	case LBRoundRobin, LBLeastConn:
	default:
		return fmt.Errorf("invalid lb %q: want round_robin or least_conn", s.LB)
	}
	if s.PathPrefix == "" {
		s.PathPrefix = "/"
	}
	if !strings.HasPrefix(s.PathPrefix, "/") {
		return fmt.Errorf("invalid path_prefix %q: must start with /", s.PathPrefix)
	}
	for i, h := range s.Hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || strings.ContainsAny(h, " /\t") || (strings.Contains(h, "*") && !strings.HasPrefix(h, "*.")) || strings.Count(h, "*") > 1 {
			return fmt.Errorf("invalid host %q: want a name or *.domain", s.Hosts[i])
		}
		s.Hosts[i] = h
	}
	if hc := s.HealthCheck; hc != nil {
		if hc.Interval < 0 || hc.Timeout < 0 {
			return fmt.Errorf("health_check: interval and timeout must not be negative")
		}
		if hc.Interval == 0 {
			hc.Interval = Duration(DefaultCheckInterval)
		}
		if hc.Timeout == 0 {
			hc.Timeout = Duration(DefaultCheckTimeout)
		}
		if s.Protocol == ProtoHTTP && hc.Path == "" {
			hc.Path = "/"
		}
		if hc.Path != "" && !strings.HasPrefix(hc.Path, "/") {
			return fmt.Errorf("health_check: path %q must start with /", hc.Path)
		}
	}
	return nil
}

// RetryEnabled reports whether failed idempotent requests may be retried.
func (s *Service) RetryEnabled() bool { return s.Retry == nil || *s.Retry }

// Normalize fills in defaults and validates the upstream.
func (u *Upstream) Normalize() error {
	if !ValidName(u.Service) {
		return fmt.Errorf("invalid service name %q", u.Service)
	}
	if !ValidName(u.ID) {
		return fmt.Errorf("invalid upstream id %q: use letters, digits, '.', '_' or '-'", u.ID)
	}
	if err := ValidAddr(u.Addr); err != nil {
		return err
	}
	if u.Weight == 0 {
		u.Weight = 1
	}
	if u.Weight < 0 || u.Weight > 1000 {
		return fmt.Errorf("invalid weight %d: want 1 to 1000", u.Weight)
	}
	return nil
}

// ValidAddr checks that addr is host:port with a numeric port.
func ValidAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("invalid addr %q: want host:port", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("invalid addr %q: port must be 1 to 65535", addr)
	}
	return nil
}

// Key names an upstream within the whole table: "service/id".
func Key(service, id string) string { return service + "/" + id }
