package cassandra

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config says which cluster and keyspace a Store uses. The zero value of
// every field but Hosts takes the default given beside it.
type Config struct {
	// Hosts are the contact points, "host" or "host:port" (port 9042 when
	// left out). The driver discovers the rest of the cluster from them.
	Hosts []string
	// Keyspace is created if missing. Default "vulcan". Lower case
	// letters, digits and underscores, starting with a letter, at most 48
	// characters: the name goes unquoted into CQL, which folds case.
	Keyspace string
	// ReplicationFactor of the keyspace when Open creates it (with
	// SimpleStrategy); an existing keyspace is left as it is. Default 1.
	ReplicationFactor int
	// Timeout bounds one attempt of a query. Default 2s: the limiter syncs
	// every 100 ms and would rather fail open than wait the driver's 11s.
	Timeout time.Duration
	// ConnectTimeout bounds dialling a node. Default 5s.
	ConnectTimeout time.Duration
	// SchemaTimeout bounds one schema statement at Open: creating a table
	// takes seconds, and longer on a busy cluster. Default 30s.
	SchemaTimeout time.Duration
	// ReconnectInterval is how often the driver redials nodes it marked
	// down. Default 2s: with the driver's 60s a lone node coming back
	// after an outage would stay unused for up to a minute.
	ReconnectInterval time.Duration
	// Logger receives the store's and the driver's logs. Default: none.
	Logger hclog.Logger
}

// Defaults of Config.
const (
	DefaultKeyspace          = "vulcan"
	DefaultReplicationFactor = 1
	DefaultTimeout           = 2 * time.Second
	DefaultConnectTimeout    = 5 * time.Second
	DefaultSchemaTimeout     = 30 * time.Second
	DefaultReconnectInterval = 2 * time.Second
)

// withDefaults returns cfg with every zero field set to its default, or an
// error naming the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Hosts) == 0 {
		return cfg, errors.New("config: no hosts")
	}
	if cfg.Keyspace == "" {
		cfg.Keyspace = DefaultKeyspace
	}
	if !validKeyspace(cfg.Keyspace) {
		return cfg, fmt.Errorf("config: keyspace %q: want lower case letters, digits and _, starting with a letter, at most 48", cfg.Keyspace)
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = DefaultReplicationFactor
	}
	if cfg.ReplicationFactor < 0 {
		return cfg, fmt.Errorf("config: replication factor %d: want at least 1", cfg.ReplicationFactor)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.Timeout, DefaultTimeout},
		{&cfg.ConnectTimeout, DefaultConnectTimeout},
		{&cfg.SchemaTimeout, DefaultSchemaTimeout},
		{&cfg.ReconnectInterval, DefaultReconnectInterval},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return cfg, nil
}

// validKeyspace reports whether name is a keyspace name that needs no
// quoting in CQL and keeps its case there.
func validKeyspace(name string) bool {
	if len(name) == 0 || len(name) > 48 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for _, c := range []byte(name) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
