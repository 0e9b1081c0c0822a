package main

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"vulcan/node"
)

// startSMTP starts the SMTP front end when -smtp is set. The SMTP proxy
// arrives with its own package; until then the listener stays closed.
func startSMTP(cfg node.Config, n *node.Node, log hclog.Logger, errc chan<- error) (stop func(context.Context), err error) {
	_ = n
	_ = errc
	if cfg.SMTP != "" {
		log.Debug("smtp front end not built into this version", "smtp", cfg.SMTP)
	}
	return func(context.Context) {}, nil
}
