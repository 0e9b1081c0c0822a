package main

import (
	"context"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"

	"vulcan/node"
	vsmtp "vulcan/smtp"
)

// startSMTP starts the SMTP front end when -smtp is set. Errors of the
// running server go to errc; stop waits for messages in flight (until its
// context ends) and closes the rest.
func startSMTP(cfg node.Config, n *node.Node, log hclog.Logger, errc chan<- error) (stop func(context.Context), err error) {
	if cfg.SMTP == "" {
		return func(context.Context) {}, nil
	}
	slog := log.Named("smtp")
	srv, err := vsmtp.New(vsmtp.Config{
		Addr:    cfg.SMTP,
		MaxSize: cfg.SMTPMaxSize,
		TLSCert: cfg.SMTPTLSCert,
		TLSKey:  cfg.SMTPTLSKey,
		Logger:  slog,
	}, n)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.SMTP)
	if err != nil {
		return nil, fmt.Errorf("smtp listener: %w", err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil {
			errc <- err
		}
	}()
	return func(ctx context.Context) {
		if err := srv.Shutdown(ctx); err != nil {
			slog.Warn("shutdown", "error", err)
		}
	}, nil
}
