package node

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclsimple"
)

// Config is everything a node is started with. Every field can be set in an
// HCL file (the tag names the attribute) and by the agent's flag of the same
// name; flags win. Defaults are set in one place, DefaultConfig.
type Config struct {
	// Node is this node's name in the cluster (default: the host name).
	Node string `hcl:"node,optional"`
	// Bind is the gossip address (UDP and TCP).
	Bind string `hcl:"bind,optional"`
	// Advertise is the gossip address told to peers when it differs from Bind.
	Advertise string `hcl:"advertise,optional"`
	// Join lists peers to join; retried in the background until one answers.
	Join []string `hcl:"join,optional"`
	// HTTP, SMTP and Admin are the listeners; an empty SMTP disables it.
	HTTP  string `hcl:"http,optional"`
	SMTP  string `hcl:"smtp,optional"`
	Admin string `hcl:"admin,optional"`
	// Data is the embedded store's directory.
	Data string `hcl:"data,optional"`
	// Cassandra lists Cassandra hosts; when set it replaces the embedded
	// store for limits, counters and registrations.
	Cassandra []string `hcl:"cassandra,optional"`
	// Keyspace is the Cassandra keyspace, created if missing.
	Keyspace string `hcl:"keyspace,optional"`
	// ReplicationFactor is used when the keyspace is created.
	ReplicationFactor int `hcl:"replication_factor,optional"`
	// AuthURLs lists authorization servers; empty runs the node open.
	AuthURLs []string `hcl:"auth_url,optional"`
	// AuthTimeout bounds each call to the authorization server.
	AuthTimeout string `hcl:"auth_timeout,optional"`
	// GossipKey is a base64 16/24/32-byte key that encrypts gossip.
	GossipKey string `hcl:"gossip_key,optional"`
	// AdminToken, when set, is required as a bearer token by the admin API.
	AdminToken string `hcl:"admin_token,optional"`
	// LogLevel is trace, debug, info, warn or error.
	LogLevel string `hcl:"log_level,optional"`
	// LogJSON writes logs as JSON lines.
	LogJSON bool `hcl:"log_json,optional"`
	// SMTPService names the service SMTP sessions go to when the auth
	// server names none.
	SMTPService string `hcl:"smtp_service,optional"`
	// SMTPTLSCert and SMTPTLSKey enable STARTTLS on the SMTP listener.
	SMTPTLSCert string `hcl:"smtp_tls_cert,optional"`
	SMTPTLSKey  string `hcl:"smtp_tls_key,optional"`
	// SMTPMaxSize is the largest message accepted, in bytes.
	SMTPMaxSize int64 `hcl:"smtp_max_size,optional"`
	// RateLimitFailClosed denies requests while the counter store is
	// unreachable instead of deciding on local counts.
	RateLimitFailClosed bool `hcl:"ratelimit_fail_closed,optional"`
	// ShutdownTimeout bounds how long SIGTERM waits for requests in flight.
	ShutdownTimeout string `hcl:"shutdown_timeout,optional"`
}

// Defaults of the agent, as documented in the README.
const (
	DefaultBind            = "127.0.0.1:7946"
	DefaultHTTP            = "127.0.0.1:8080"
	DefaultSMTP            = "127.0.0.1:2525"
	DefaultAdmin           = "127.0.0.1:9090"
	DefaultData            = "./vulcan-data"
	DefaultKeyspace        = "vulcan"
	DefaultSMTPMaxSize     = 25 << 20
	DefaultAuthTimeout     = time.Second
	DefaultShutdownTimeout = 30 * time.Second
)

// DefaultConfig returns the configuration of a bare `vulcan agent`.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "vulcan"
	}
	return Config{
		Node:              host,
		Bind:              DefaultBind,
		HTTP:              DefaultHTTP,
		SMTP:              DefaultSMTP,
		Admin:             DefaultAdmin,
		Data:              DefaultData,
		Keyspace:          DefaultKeyspace,
		ReplicationFactor: 1,
		AuthTimeout:       DefaultAuthTimeout.String(),
		LogLevel:          "info",
		SMTPMaxSize:       DefaultSMTPMaxSize,
		ShutdownTimeout:   DefaultShutdownTimeout.String(),
	}
}

// LoadFile reads an HCL config file over c: attributes present in the file
// replace c's values, others are kept.
func (c *Config) LoadFile(path string) error {
	var f Config
	if err := hclsimple.DecodeFile(path, nil, &f); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	c.overlay(f)
	return nil
}

// overlay copies the non-zero fields of f over c.
func (c *Config) overlay(f Config) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.Node, f.Node)
	set(&c.Bind, f.Bind)
	set(&c.Advertise, f.Advertise)
	set(&c.HTTP, f.HTTP)
	set(&c.SMTP, f.SMTP)
	set(&c.Admin, f.Admin)
	set(&c.Data, f.Data)
	set(&c.Keyspace, f.Keyspace)
	set(&c.AuthTimeout, f.AuthTimeout)
	set(&c.GossipKey, f.GossipKey)
	set(&c.AdminToken, f.AdminToken)
	set(&c.LogLevel, f.LogLevel)
	set(&c.SMTPService, f.SMTPService)
	set(&c.SMTPTLSCert, f.SMTPTLSCert)
	set(&c.SMTPTLSKey, f.SMTPTLSKey)
	set(&c.ShutdownTimeout, f.ShutdownTimeout)
	if f.Join != nil {
		c.Join = f.Join
	}
	if f.Cassandra != nil {
		c.Cassandra = f.Cassandra
	}
	if f.AuthURLs != nil {
		c.AuthURLs = f.AuthURLs
	}
	if f.ReplicationFactor != 0 {
		c.ReplicationFactor = f.ReplicationFactor
	}
	if f.SMTPMaxSize != 0 {
		c.SMTPMaxSize = f.SMTPMaxSize
	}
	c.LogJSON = c.LogJSON || f.LogJSON
	c.RateLimitFailClosed = c.RateLimitFailClosed || f.RateLimitFailClosed
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks the configuration and returns the first problem found,
// naming the setting.
func (c *Config) Validate() error {
	if c.Node == "" {
		return fmt.Errorf("node: name must not be empty")
	}
	addrs := []struct{ name, v string }{{"bind", c.Bind}, {"http", c.HTTP}, {"admin", c.Admin}, {"smtp", c.SMTP}}
	for _, a := range addrs {
		if a.v == "" && a.name == "smtp" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("%s: %q is not host:port", a.name, a.v)
		}
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("advertise: %q is not host:port", c.Advertise)
		}
	}
	if _, err := c.gossipKey(); err != nil {
		return err
	}
	for _, d := range []struct{ name, v string }{{"auth_timeout", c.AuthTimeout}, {"shutdown_timeout", c.ShutdownTimeout}} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil || v <= 0 {
			return fmt.Errorf("%s: %q is not a positive duration", d.name, d.v)
		}
	}
	if c.SMTPMaxSize < 0 {
		return fmt.Errorf("smtp_max_size: must not be negative")
	}
	if (c.SMTPTLSCert == "") != (c.SMTPTLSKey == "") {
		return fmt.Errorf("smtp_tls_cert and smtp_tls_key go together")
	}
	if c.ReplicationFactor < 1 {
		return fmt.Errorf("replication_factor: must be at least 1")
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "trace", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not trace, debug, info, warn or error", c.LogLevel)
	}
	return nil
}

func (c *Config) gossipKey() ([]byte, error) {
	if c.GossipKey == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(c.GossipKey)
	if err != nil {
		return nil, fmt.Errorf("gossip_key: not base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("gossip_key: %d bytes; want 16, 24 or 32", len(k))
}

func durationOr(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}
