package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	vhttp "vulcan/http"
	"vulcan/http/admin"
	"vulcan/node"
)

const version = node.Version

// agentFlags binds the agent's flags to a config; flags given on the
// command line are applied over the config file afterwards.
func agentFlags(fs *flag.FlagSet, c *node.Config) (configFile *string, lists map[string]*string) {
	configFile = fs.String("config", "", "HCL config file (flags win over it)")
	fs.StringVar(&c.Node, "node", c.Node, "node name (default: host name)")
	fs.StringVar(&c.Bind, "bind", c.Bind, "gossip address ADDR:PORT")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "gossip address told to peers, when it differs from -bind")
	fs.StringVar(&c.HTTP, "http", c.HTTP, "HTTP proxy listener")
	fs.StringVar(&c.SMTP, "smtp", c.SMTP, "SMTP proxy listener (empty disables)")
	fs.StringVar(&c.Admin, "admin", c.Admin, "admin API listener")
	fs.StringVar(&c.Data, "data", c.Data, "embedded store directory")
	fs.StringVar(&c.Keyspace, "keyspace", c.Keyspace, "Cassandra keyspace (created if missing)")
	fs.IntVar(&c.ReplicationFactor, "replication-factor", c.ReplicationFactor, "replication factor of a keyspace vulcan creates")
	fs.StringVar(&c.AuthTimeout, "auth-timeout", c.AuthTimeout, "timeout of each authorization call")
	fs.StringVar(&c.GossipKey, "gossip-key", c.GossipKey, "base64 16/24/32-byte key encrypting gossip")
	fs.StringVar(&c.AdminToken, "admin-token", c.AdminToken, "bearer token the admin API requires")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "trace, debug, info, warn or error")
	fs.BoolVar(&c.LogJSON, "log-json", c.LogJSON, "log JSON lines")
	fs.StringVar(&c.SMTPService, "smtp-service", c.SMTPService, "service for SMTP sessions the auth server names none for")
	fs.StringVar(&c.SMTPTLSCert, "smtp-tls-cert", c.SMTPTLSCert, "certificate file enabling STARTTLS")
	fs.StringVar(&c.SMTPTLSKey, "smtp-tls-key", c.SMTPTLSKey, "key file enabling STARTTLS")
	fs.Int64Var(&c.SMTPMaxSize, "smtp-max-size", c.SMTPMaxSize, "largest message accepted, in bytes")
	fs.BoolVar(&c.RateLimitFailClosed, "ratelimit-fail-closed", c.RateLimitFailClosed, "deny requests while the counter store is unreachable")
	fs.StringVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long SIGTERM waits for requests in flight")
	lists = map[string]*string{
		"join":      fs.String("join", "", "peers to join, ADDR[,ADDR] (retried until one answers)"),
		"cassandra": fs.String("cassandra", "", "Cassandra hosts HOST[,HOST] (instead of the embedded store)"),
		"auth-url":  fs.String("auth-url", "", "authorization server URL[,URL] (empty: open mode)"),
	}
	return configFile, lists
}

// loadAgentConfig resolves defaults, then the config file, then the flags
// that were given.
func loadAgentConfig(args []string, stderr io.Writer) (node.Config, error) {
	cfg := node.DefaultConfig()
	probe := flag.NewFlagSet("agent", flag.ContinueOnError)
	probe.SetOutput(stderr)
	file, _ := agentFlags(probe, &node.Config{})
	if err := probe.Parse(args); err != nil {
		return cfg, err
	}
	if *file != "" {
		if err := cfg.LoadFile(*file); err != nil {
			return cfg, err
		}
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_, lists := agentFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("agent: unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "join":
			cfg.Join = node.SplitList(*lists["join"])
		case "cassandra":
			cfg.Cassandra = node.SplitList(*lists["cassandra"])
		case "auth-url":
			cfg.AuthURLs = node.SplitList(*lists["auth-url"])
		}
	})
	return cfg, cfg.Validate()
}

func newLogger(cfg node.Config, out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "vulcan",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogJSON,
		Output:     out,
		TimeFormat: "2006-01-02T15:04:05.000Z07:00",
	})
}

// runAgent runs a node until SIGTERM or SIGINT, then stops accepting, lets
// requests in flight finish, leaves the cluster and exits.
func runAgent(args []string, stderr io.Writer) error {
	cfg, err := loadAgentConfig(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log := newLogger(cfg, stderr)

	// Listeners first: a port in use is reported before anything starts.
	httpLn, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin)
	if err != nil {
		httpLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}

	n, err := node.New(cfg, log)
	if err != nil {
		httpLn.Close()
		adminLn.Close()
		return err
	}
	defer n.Close()

	proxy := vhttp.New(vhttp.Config{Logger: log.Named("http")}, n)
	api := admin.New(admin.Config{Token: cfg.AdminToken, Logger: log.Named("admin")}, n)
	adminSrv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: log.Named("admin").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})}

	errc := make(chan error, 3)
	go func() { errc <- proxy.Serve(httpLn) }()
	go func() {
		if err := adminSrv.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	stopSMTP, err := startSMTP(cfg, n, log, errc)
	if err != nil {
		return err
	}
	log.Info("listening", "http", httpLn.Addr().String(), "admin", adminLn.Addr().String(), "smtp", cfg.SMTP)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-errc:
		if err != nil {
			log.Error("listener failed", "error", err)
			return err
		}
	}

	timeout, _ := time.ParseDuration(cfg.ShutdownTimeout)
	if timeout <= 0 {
		timeout = node.DefaultShutdownTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Stop taking requests and let those in flight finish before leaving
	// the cluster, so a drain elsewhere still sees them.
	if err := proxy.Shutdown(ctx); err != nil {
		log.Warn("http shutdown", "error", err)
	}
	stopSMTP(ctx)
	n.Shutdown(5 * time.Second)
	_ = adminSrv.Shutdown(ctx)
	if err := n.Close(); err != nil {
		log.Warn("close", "error", err)
	}
	log.Info("stopped")
	return nil
}
