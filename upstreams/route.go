package upstreams

import (
	"slices"
	"strings"
)

// Route finds the HTTP service for a request's Host and path.
//
// The host is compared lowercased, without its port, brackets or a trailing
// dot. Services are grouped by host: an exact name first, then wildcards
// "*.domain" (any depth of subdomain, the longest domain first), then the
// services that name no host. Within a group the longest path_prefix that
// prefixes path wins (a plain string prefix; equal prefixes go to the first
// service by name). A group in which no prefix matches is passed over for
// the next, so that a host-specific "/api" does not hide a catch-all "/".
//
// The returned Service shares its slices and pointers with the table: treat
// it as read-only (Service returns a private copy).
func (t *Table) Route(host, path string) (Service, bool) {
	if s := t.snap.Load().router.route(host, path); s != nil {
		return s.def, true
	}
	return Service{}, false
}

// RouteRef is Route without the copy, for the request path: the service it
// points to belongs to an immutable snapshot of the table and must not be
// modified. Nil when no service matches.
func (t *Table) RouteRef(host, path string) *Service {
	if s := t.snap.Load().router.route(host, path); s != nil {
		return &s.def
	}
	return nil
}

// router indexes the HTTP services of one snapshot. Every group is sorted
// by path prefix length, longest first, then by name.
type router struct {
	exact map[string][]*svc
	wild  map[string][]*svc // keyed by the domain after "*."
	any   []*svc
}

func buildRouter(services map[string]*svc) router {
	r := router{exact: map[string][]*svc{}, wild: map[string][]*svc{}}
	for _, s := range services {
		if s.def.Protocol != ProtoHTTP {
			continue
		}
		if len(s.def.Hosts) == 0 {
			r.any = append(r.any, s)
			continue
		}
		for _, h := range s.def.Hosts {
			// Configured names get the same treatment as request hosts,
			// so that "Example.com." or "[::1]" still match.
			if d, ok := strings.CutPrefix(h, "*."); ok {
				d = canonicalHost(d)
				r.wild[d] = appendOnce(r.wild[d], s)
			} else if h = canonicalHost(h); h != "" {
				r.exact[h] = appendOnce(r.exact[h], s)
			}
		}
	}
	for _, g := range r.exact {
		sortGroup(g)
	}
	for _, g := range r.wild {
		sortGroup(g)
	}
	sortGroup(r.any)
	return r
}

func appendOnce(g []*svc, s *svc) []*svc {
	if slices.Contains(g, s) {
		return g
	}
	return append(g, s)
}

func sortGroup(g []*svc) {
	slices.SortFunc(g, func(a, b *svc) int {
		if d := len(b.def.PathPrefix) - len(a.def.PathPrefix); d != 0 {
			return d
		}
		return strings.Compare(a.def.Name, b.def.Name)
	})
}

func (r *router) route(host, path string) *svc {
	host = canonicalHost(host)
	if s := matchPath(r.exact[host], path); s != nil {
		return s
	}
	if len(r.wild) > 0 {
		// Each dot starts a shorter domain: the first one found is the
		// longest wildcard that covers host.
		for i := 0; i < len(host); i++ {
			if host[i] != '.' {
				continue
			}
			if s := matchPath(r.wild[host[i+1:]], path); s != nil {
				return s
			}
		}
	}
	return matchPath(r.any, path)
}

func matchPath(g []*svc, path string) *svc {
	for _, s := range g {
		if strings.HasPrefix(path, s.def.PathPrefix) {
			return s
		}
	}
	return nil
}

// canonicalHost strips the port, IPv6 brackets and a trailing dot, and
// lowercases. It allocates only if host has upper-case letters.
func canonicalHost(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
	} else if i := strings.IndexByte(host, ':'); i >= 0 && strings.IndexByte(host[i+1:], ':') < 0 {
		// Exactly one colon: name:port. More is a bare IPv6 address.
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if 'A' <= host[i] && host[i] <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}
