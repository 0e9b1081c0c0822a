package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// client talks to a node's admin API.
type client struct {
	addr  string
	token string
	http  *http.Client
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// apiError is an answer of the admin API other than 2xx.
type apiError struct {
	status int
	msg    string
	body   []byte
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.status) }

func (c *client) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.addr, "/")+path, body)
	if err != nil {
		return fmt.Errorf("admin address %q: %w", c.addr, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &apiError{status: resp.StatusCode, msg: msg, body: b}
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// runClient runs an admin subcommand.
func runClient(args []string, stdout, stderr io.Writer) error {
	c := &client{addr: os.Getenv("VULCAN_ADDR"), token: os.Getenv("VULCAN_TOKEN"), http: &http.Client{Timeout: 15 * time.Minute}}
	if c.addr == "" {
		c.addr = "http://127.0.0.1:9090"
	}
	cmd := args[0]
	sub := ""
	rest := args[1:]
	if cmd == "service" || cmd == "upstream" || cmd == "limit" {
		if len(rest) == 0 {
			return fmt.Errorf("%s: missing subcommand", cmd)
		}
		sub, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet(strings.TrimSpace(cmd+" "+sub), flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", c.addr, "admin API address ($VULCAN_ADDR)")
	fs.StringVar(&c.token, "admin-token", c.token, "admin token ($VULCAN_TOKEN)")
	parse := func(npos int, usage string) ([]string, error) {
		// Positional arguments come first; flags may follow them.
		if len(rest) < npos {
			return nil, fmt.Errorf("usage: vulcan %s", usage)
		}
		pos := rest[:npos]
		if err := fs.Parse(rest[npos:]); err != nil {
			return nil, err
		}
		if fs.NArg() > 0 {
			return nil, fmt.Errorf("unexpected argument %q; usage: vulcan %s", fs.Arg(0), usage)
		}
		if !strings.Contains(c.addr, "://") {
			c.addr = "http://" + c.addr
		}
		return pos, nil
	}
	esc := url.PathEscape

	switch cmd + " " + sub {
	case "status ":
		if _, err := parse(0, "status"); err != nil {
			return err
		}
		var s map[string]any
		if err := c.do("GET", "/v1/status", nil, &s); err != nil {
			return err
		}
		return printJSON(stdout, s)
	case "members ":
		if _, err := parse(0, "members"); err != nil {
			return err
		}
		var ms []struct{ Name, Addr, Status string }
		if err := c.do("GET", "/v1/members", nil, &ms); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS")
		for _, m := range ms {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, m.Addr, m.Status)
		}
		return tw.Flush()
	case "service put":
		var hosts stringList
		protocol := fs.String("protocol", "http", "http or smtp")
		fs.Var(&hosts, "host", "Host name to route (repeatable; *.domain for subdomains)")
		prefix := fs.String("path-prefix", "", "path prefix to route (default /)")
		lb := fs.String("lb", "", "round_robin (default) or least_conn")
		check := fs.String("health-path", "", "active health check path (HTTP) or any value to check SMTP")
		interval := fs.Duration("health-interval", 0, "active health check interval (default 5s)")
		timeout := fs.Duration("health-timeout", 0, "active health check timeout (default 2s)")
		passAuth := fs.Bool("pass-auth", false, "forward the client's Authorization header upstream")
		noRetry := fs.Bool("no-retry", false, "never retry a failed request on another upstream")
		pos, err := parse(1, "service put NAME [-protocol http|smtp] [-host H]... [-path-prefix P] [-lb POLICY]")
		if err != nil {
			return err
		}
		svc := map[string]any{"protocol": *protocol, "hosts": []string(hosts), "path_prefix": *prefix, "lb": *lb, "pass_auth": *passAuth}
		if *noRetry {
			svc["retry"] = false
		}
		if *check != "" || *interval != 0 {
			hc := map[string]any{"interval": interval.String(), "timeout": timeout.String()}
			if *protocol != "smtp" {
				hc["path"] = *check
			}
			svc["health_check"] = hc
		}
		var out any
		if err := c.do("PUT", "/v1/services/"+esc(pos[0]), svc, &out); err != nil {
			return err
		}
		return printJSON(stdout, out)
	case "service rm":
		pos, err := parse(1, "service rm NAME")
		if err != nil {
			return err
		}
		return c.do("DELETE", "/v1/services/"+esc(pos[0]), nil, nil)
	case "service ls":
		if _, err := parse(0, "service ls"); err != nil {
			return err
		}
		var svcs []struct {
			Name, Protocol, Path_prefix, LB string
			Hosts                           []string
			Upstreams                       []struct {
				ID, Addr, State, Health string
				Weight                  int
				In_flight               int64
			}
		}
		if err := c.do("GET", "/v1/services", nil, &svcs); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tPROTOCOL\tHOSTS\tPREFIX\tLB\tUPSTREAM\tADDRESS\tWEIGHT\tSTATE\tHEALTH\tIN FLIGHT")
		for _, s := range svcs {
			hosts := strings.Join(s.Hosts, ",")
			if hosts == "" {
				hosts = "*"
			}
			if len(s.Upstreams) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t-\t\t\t\t\t\n", s.Name, s.Protocol, hosts, s.Path_prefix, s.LB)
			}
			for _, u := range s.Upstreams {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", s.Name, s.Protocol, hosts, s.Path_prefix, s.LB,
					u.ID, u.Addr, u.Weight, u.State, u.Health, u.In_flight)
			}
		}
		return tw.Flush()
	case "upstream put":
		weight := fs.Int("weight", 1, "relative weight, 1 to 1000")
		pos, err := parse(3, "upstream put SERVICE ID ADDR [-weight N]")
		if err != nil {
			return err
		}
		return c.do("PUT", "/v1/services/"+esc(pos[0])+"/upstreams/"+esc(pos[1]), map[string]any{"addr": pos[2], "weight": *weight}, nil)
	case "upstream rm":
		pos, err := parse(2, "upstream rm SERVICE ID")
		if err != nil {
			return err
		}
		return c.do("DELETE", "/v1/services/"+esc(pos[0])+"/upstreams/"+esc(pos[1]), nil, nil)
	case "upstream drain":
		wait := fs.Duration("wait", 0, "wait until no node has a request in flight to it")
		pos, err := parse(2, "upstream drain SERVICE ID [-wait DURATION]")
		if err != nil {
			return err
		}
		path := "/v1/services/" + esc(pos[0]) + "/upstreams/" + esc(pos[1]) + "/drain"
		if *wait > 0 {
			path += "?wait=" + wait.String()
		}
		var p any
		err = c.do("POST", path, nil, &p)
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusRequestTimeout {
			fmt.Fprintf(stdout, "%s\n", ae.body)
			return fmt.Errorf("drain not complete after %s", wait)
		}
		if err != nil {
			return err
		}
		return printJSON(stdout, p)
	case "upstream enable":
		pos, err := parse(2, "upstream enable SERVICE ID")
		if err != nil {
			return err
		}
		return c.do("POST", "/v1/services/"+esc(pos[0])+"/upstreams/"+esc(pos[1])+"/enable", nil, nil)
	case "limit add":
		token := fs.String("token", "", "auth token regular expression")
		protocol := fs.String("protocol", "", "protocol regular expression (HTTP, SMTP)")
		method := fs.String("method", "", "method regular expression")
		path := fs.String("path", "", "path regular expression")
		size := fs.Int64("data-size", 0, "apply only to requests of at least this many bytes")
		period := fs.Int("period", 0, "window in seconds")
		threshold := fs.Int64("threshold", -1, "most requests allowed in the window")
		if _, err := parse(0, "limit add [-token RE] [-protocol RE] [-method RE] [-path RE] [-data-size N] -period SECONDS -threshold N"); err != nil {
			return err
		}
		if *period <= 0 || *threshold < 0 {
			return errors.New("limit add: -period (> 0) and -threshold (>= 0) are required")
		}
		var l struct {
			ID string `json:"id"`
		}
		if err := c.do("POST", "/v1/limits", map[string]any{"auth_token": *token, "protocol": *protocol, "method": *method,
			"path": *path, "data_size": *size, "period": *period, "threshold": *threshold}, &l); err != nil {
			return err
		}
		fmt.Fprintln(stdout, l.ID)
		return nil
	case "limit ls":
		if _, err := parse(0, "limit ls"); err != nil {
			return err
		}
		var ls []struct {
			ID, Auth_token, Protocol, Method, Path string
			Data_size                              int64
			Period                                 int
			Threshold                              int64
		}
		if err := c.do("GET", "/v1/limits", nil, &ls); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTOKEN\tPROTOCOL\tMETHOD\tPATH\tDATA SIZE\tPERIOD\tTHRESHOLD")
		for _, l := range ls {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", l.ID, l.Auth_token, l.Protocol, l.Method, l.Path, l.Data_size, l.Period, l.Threshold)
		}
		return tw.Flush()
	case "limit rm":
		pos, err := parse(1, "limit rm ID")
		if err != nil {
			return err
		}
		return c.do("DELETE", "/v1/limits/"+esc(pos[0]), nil, nil)
	}
	return fmt.Errorf("unknown command %q; run vulcan help", strings.TrimSpace(cmd+" "+sub))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
